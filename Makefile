# Every target installs what it needs into a project virtualenv from a lock file (uv, reproducible).
#   make test                       lint, type-check and test against the newest Airflow we support
#   make test AIRFLOW=3.0 PYTHON=python3.10
#                                   the same on another Airflow line (3.0 3.1 3.2 3.3) and Python (3.10-3.13)
#   make unit-core AIRFLOW=3.1      only the hook, sensor and provider-registration tests (CORE_TESTS)
#   make demo                       the example DAG under `airflow dags test` against the simulator
#   make bench                      the benchmarks (prints tables; figures go in the README)
#   make e2e                        real scheduler, triggerer and api-server; the Connections UI in Chromium
#   make screenshots                e2e, then copy its screenshots over the README's (docs/screenshots/)
#   make chaos                      a longer seeded chaos run (CHAOS_RUNS per mode, CHAOS_SEED)
#   make dist                       sdist + wheel in dist/, checked with `twine check`
#   make install-check              the wheel, installed with plain pip into fresh Airflow 3.0.0 and 3.3.x
#   make lock                       re-resolve the lock files after changing pyproject.toml
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
AIRFLOW ?= 3.3
AIRFLOW_LINES := 3.0 3.1 3.2 3.3
# PYTHON may be a command on PATH (python3.12), a full path, or a bare pythonX.Y that only pyenv has
# (its shims refuse versions not selected): then the newest pyenv-installed X.Y is used.
PY := $(shell { $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || \
        ls -d "$$(pyenv root 2>/dev/null)"/versions/$(patsubst python%,%,$(notdir $(PYTHON))).*/bin/python$(patsubst python%,%,$(notdir $(PYTHON))) 2>/dev/null | sort -V | tail -n 1; } | tail -n 1)
ifeq ($(PY),)
$(error no Python interpreter for PYTHON=$(PYTHON): install it (pyenv install 3.X) or pass a full path)
endif
PY_VERSION := $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# .venv is the default (newest Airflow, the default python3); every other pair has its own.
VENV ?= $(if $(and $(filter 3.3,$(AIRFLOW)),$(filter python3,$(PYTHON))),.venv,.venv-airflow-$(AIRFLOW)-py$(PY_VERSION))
LOCK := requirements/airflow-$(AIRFLOW).txt
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
TWINE_VERSION := 7.0.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The hook, sensor and provider-registration tests: what CI runs on the middle Airflow lines.
CORE_TESTS := tests/test_hook.py tests/test_sensor.py tests/test_provider.py
# mypy checks the compat branch of the venv's Airflow line (airflow_provider_backupjob/compat.py).
MYPY_FLAGS := $(foreach v,3.1 3.2 3.3,$(if $(filter $(v),$(firstword $(sort $(v) $(AIRFLOW)))),--always-true,--always-false) AIRFLOW_V_$(subst .,_,$(v))_PLUS)
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: install test lint typecheck unit unit-core demo bench chaos e2e screenshots dist install-check lock clean

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --disable-pip-version-check --progress-bar off uv==$(UV_VERSION)

$(STAMP): $(LOCK) pyproject.toml | $(UV)
	@echo "== $(VENV): Airflow $(AIRFLOW) line ($(LOCK)) on Python $(PY_VERSION) ($(PY))"
	$(UV) venv --allow-existing --python $(PY) $(VENV)
	$(UV) pip sync --python $(BIN)/python --compile-bytecode $(LOCK)
	$(UV) pip install --python $(BIN)/python --no-deps --compile-bytecode -e .
	touch $@

requirements/airflow-%.txt:
	@echo "no lock file $@: AIRFLOW must be one of $(AIRFLOW_LINES)"; exit 2

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --python-version $(PY_VERSION) $(MYPY_FLAGS)

# pytest exits 5 when it collected no test: a run that tested nothing fails, and says so.
PYTEST = $(BIN)/python -m pytest -q $(1) $(PYTEST_ARGS) || { status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: nothing was tested"; fi; exit $$status; }

unit: $(STAMP)
	$(call PYTEST,)

unit-core: $(STAMP)
	$(call PYTEST,$(CORE_TESTS))

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(UV) pip install --python $(BIN)/python --compile-bytecode -r requirements/bench.txt
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

chaos: $(STAMP)  # exploration: a fresh seed each run (CHAOS_SEED=n replays one), 1000 waits per mode
	@seed=$${CHAOS_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; echo "make chaos: CHAOS_SEED=$$seed"; \
	CHAOS_SEED=$$seed CHAOS_RUNS=$${CHAOS_RUNS:-1000} $(BIN)/python -m pytest -q tests/test_chaos.py $(PYTEST_ARGS)

e2e: $(STAMP)
	$(BIN)/python e2e/run.py $(E2E_ARGS)

# The README's pictures: only this target writes tracked files.
screenshots: $(STAMP)
	$(BIN)/python e2e/run.py $(E2E_ARGS)
	cp .e2e/screenshots/*.png docs/screenshots/

dist: | $(UV)
	rm -rf dist
	$(UV) build --sdist --wheel --out-dir dist
	$(UV) tool run --from twine==$(TWINE_VERSION) twine check --strict dist/*

install-check: | $(UV)
	@ls dist/*.whl >/dev/null 2>&1 || $(MAKE) dist
	$(PY) scripts/install_check.py $(INSTALL_CHECK_ARGS)

lock: $(UV)
	cd requirements && for line in $(AIRFLOW_LINES); do \
	    ../$(UV) pip compile ../pyproject.toml --extra test --universal --python-version 3.10 \
	        -c airflow-$$line.in -o airflow-$$line.txt -q; done
	cd requirements && ../$(UV) pip compile ../pyproject.toml --extra test --extra bench --python-version 3.11 \
	    -c airflow-3.3.txt -o bench.txt -q
	cd requirements && ../$(UV) pip compile e2e.in --universal --python-version 3.10 -c airflow-3.3.txt -o e2e.txt -q

clean:
	rm -rf .venv .venv-airflow-* $(TOOLS) .demo .e2e .install-check dist
