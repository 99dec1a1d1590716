# Every target installs what it needs into a project virtualenv from a lock file (uv, reproducible).
#   make test                       lint, type-check and test against the newest Airflow we support
#   make test AIRFLOW=3.2           the same against the oldest (its own virtualenv)
#   make demo                       the example DAG under `airflow dags test` against the simulator
#   make bench                      the benchmarks (prints tables; figures go in the README)
#   make e2e                        real scheduler, triggerer and api-server; the Connections UI in Chromium
#   make chaos                      a longer seeded chaos run (CHAOS_RUNS per mode, CHAOS_SEED)
#   make lock                       re-resolve the lock files after changing pyproject.toml
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
AIRFLOW ?= 3.3
VENV ?= $(if $(filter 3.3,$(AIRFLOW)),.venv,.venv-airflow-$(AIRFLOW))
LOCK := requirements/airflow-$(AIRFLOW).txt
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: install test lint typecheck unit demo bench chaos e2e lock clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): $(LOCK) pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python --compile-bytecode $(LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --compile-bytecode -e .
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(UV) pip install --quiet --python $(BIN)/python --compile-bytecode -r requirements/bench.txt
	$(BIN)/python benchmarks/request_economy.py
	$(BIN)/python benchmarks/parse_cost.py
	$(BIN)/python benchmarks/trigger_scale.py
	$(BIN)/python benchmarks/crowd_fleet.py

.PHONY: fuzz
fuzz: $(STAMP)  # the properties with FUZZ_EXAMPLES each, from a fresh seed (FUZZ_SEED=n replays a run)
	@seed=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; echo "make fuzz: seed $$seed"; \
	$(BIN)/python -m pytest -q --timeout=0 --hypothesis-profile=fuzz --hypothesis-seed=$$seed \
	    --hypothesis-show-statistics tests/test_properties.py $(PYTEST_ARGS) || { echo "make fuzz failed:" \
	    "replay with 'make fuzz FUZZ_SEED=$$seed', or paste the @reproduce_failure line above on the test"; exit 1; }

chaos: $(STAMP)
	CHAOS_RUNS=$${CHAOS_RUNS:-1000} $(BIN)/python -m pytest -q tests/test_chaos.py $(PYTEST_ARGS)

e2e: $(STAMP)
	$(BIN)/python e2e/run.py

lock: $(UV)
	cd requirements && ../$(UV) pip compile ../pyproject.toml --extra test --python-version 3.11 -o airflow-3.3.txt -q
	cd requirements && ../$(UV) pip compile ../pyproject.toml --extra test --python-version 3.11 \
	    -c lowest-constraints.txt -o airflow-3.2.txt -q
	cd requirements && ../$(UV) pip compile ../pyproject.toml --extra test --extra bench --python-version 3.11 \
	    -c airflow-3.3.txt -o bench.txt -q

clean:
	rm -rf .venv .venv-airflow-* $(TOOLS) .demo .e2e
