"""The example DAGs, parsed and run with `airflow dags test` against the simulator.

`airflow dags test` runs the real task runner in a subprocess (triggers inline), so this covers
templating, XCom between tasks, deferral and resumption as a user's first run would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_backupjob.compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_2_PLUS
from airflow_provider_backupjob.simulator import ADMIN_USER, DEFAULT_PASSWORD, Simulator

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = Path(sys.executable).parent / "airflow"


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Simulator]]:
    home = tmp_path_factory.mktemp("airflow-home")
    with Simulator() as sim:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "VCENTER_BACKUP_POKE_INTERVAL": "0.2",
            "VCENTER_BACKUP_LOCATION": "nfs://filer.example.com/vcsa",
            "AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT": json.dumps(
                {
                    "conn_type": "vcenter_backup",
                    "host": "http://127.0.0.1",
                    "port": sim.port,
                    "login": ADMIN_USER,
                    "password": DEFAULT_PASSWORD,
                    "extra": {"timeout": 10},
                }
            ),
            "AIRFLOW_CONN_VCENTER_BACKUP_TARGET": json.dumps(
                {
                    "conn_type": "generic",
                    "login": "u",
                    "password": "target-pw-0451",
                    "extra": {"backup_password": "Backup-pw-0451"},
                }
            ),
        }
        subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
        if not AIRFLOW_V_3_1_PLUS:  # Airflow 3.0's `dags test` finds the DAG in the database only
            reserialize = [str(AIRFLOW), "dags", "reserialize"]
            subprocess.run(reserialize, env=env, capture_output=True, check=True, timeout=300)
        yield env, sim


def dags_test(env: dict[str, str], dag_id: str, conf: dict[str, str] | None = None) -> tuple[int, str]:
    cmd = [str(AIRFLOW), "dags", "test", dag_id]
    if conf is not None:
        cmd += ["--conf", json.dumps(conf)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def parse_folder(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """Airflow's DagBag of ``folder``, in a fresh interpreter: its import errors and DAG ids."""
    dagbag = "airflow.dag_processing.dagbag" if AIRFLOW_V_3_2_PLUS else "airflow.models.dagbag"
    code = (
        f"import json; from {dagbag} import DagBag; bag = DagBag(dag_folder={str(folder)!r}); "
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()}, "
        "'dags': sorted(bag.dag_ids)}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_example_dags_parse_without_errors(airflow_env: tuple[dict[str, str], Simulator]) -> None:
    env, _ = airflow_env
    assert parse_folder(ROOT / "example_dags", env) == {
        "errors": {},
        "dags": [
            "vcenter_backup_asset",
            "vcenter_backup_gate",
            "vcenter_backup_gate_deferrable",
            "vcenter_backup_gate_reschedule",
            "vcenter_backup_start_and_wait",
            "vcenter_backup_tonight",
        ],
    }


@pytest.mark.parametrize("dag_id", ["vcenter_backup_gate", "vcenter_backup_gate_deferrable"])
def test_gate_succeeds_and_hands_the_status_downstream(
    airflow_env: tuple[dict[str, str], Simulator], dag_id: str
) -> None:
    env, sim = airflow_env
    job = sim.add_job(none_polls=1, inprogress_polls=2)
    before = sim.stats()["logins"]
    code, out = dags_test(env, dag_id, {"job_id": job})
    assert code == 0, out[-3000:]
    assert f"backup job {job} SUCCEEDED" in out and "patching can start" in out
    assert f"Backup job {job} is INPROGRESS" in out
    stats = sim.stats()
    assert stats["open_sessions"] == 0
    # poke mode: one session for the wait; deferrable: one for the check, one for the trigger
    assert stats["logins"] - before == (1 if dag_id == "vcenter_backup_gate" else 2)
    assert DEFAULT_PASSWORD not in out


@pytest.mark.parametrize(
    ("dag_id", "job_kind", "message"),
    [
        ("vcenter_backup_gate", "failed", "FAILED"),
        ("vcenter_backup_gate_deferrable", "failed", "FAILED"),
        ("vcenter_backup_gate_deferrable", "missing", "does not exist"),
    ],
)
def test_gate_fails_on_failed_or_missing_job(
    airflow_env: tuple[dict[str, str], Simulator], dag_id: str, job_kind: str, message: str
) -> None:
    env, sim = airflow_env
    job = sim.add_job(outcome="FAILED", inprogress_polls=1) if job_kind == "failed" else "20990101-000000-1"
    code, out = dags_test(env, dag_id, {"job_id": job})
    assert message in out, out[-3000:]
    assert "patching can start" not in out
    assert code != 0 or "state=failed" in out
    assert sim.stats()["open_sessions"] == 0


def test_start_and_wait_example(airflow_env: tuple[dict[str, str], Simulator]) -> None:
    env, sim = airflow_env
    sim.set_start_script(inprogress_polls=2)
    code, out = dags_test(env, "vcenter_backup_start_and_wait")
    assert code == 0, out[-3000:]
    started = sim.stats()["started_requests"][-1]
    assert started["location"] == "nfs://filer.example.com/vcsa" and started["location_type"] == "NFS"
    assert "SUCCEEDED (100%)" in out
    for secret in ("target-pw-0451", "Backup-pw-0451", DEFAULT_PASSWORD):
        assert secret not in out
    assert sim.stats()["open_sessions"] == 0


def test_tonights_backup_waits_for_the_next_scheduled_job(
    airflow_env: tuple[dict[str, str], Simulator],
) -> None:
    env, sim = airflow_env
    sim.add_job(job_type="SCHEDULED", started_ago=3600, inprogress_polls=0)  # last night's: too early
    sim.add_job(inprogress_polls=0)  # a manual one: not the scheduled backup
    sim.set_schedule(3, run_seconds=0.5, first_in=4)  # tonight's starts after the run does
    try:
        code, out = dags_test(env, "vcenter_backup_tonight")
    finally:
        sim.set_schedule(None)
    assert code == 0, out[-3000:]
    chosen = [line for line in out.splitlines() if "Chose backup job" in line]
    assert chosen and "(SCHEDULED, started" in chosen[0]
    job_id = chosen[0].split("Chose backup job ", 1)[1].split()[0]
    assert f"SCHEDULED backup job {job_id} SUCCEEDED" in out and "patching can start" in out
    assert sim.stats()["open_sessions"] == 0


def readme_recipes() -> dict[str, str]:
    """The complete DAGs of the README's recipe sections, by heading."""
    text = (ROOT / "README.md").read_text()
    found = {}
    for section in text.split("\n## ")[1:]:
        heading, _, body = section.partition("\n")
        if heading.startswith("Recipe:"):
            found[heading] = body.split("```python\n", 1)[1].split("\n```", 1)[0]
    return found


def test_readme_recipes_are_complete_dags(
    airflow_env: tuple[dict[str, str], Simulator], tmp_path: Path
) -> None:
    env, _ = airflow_env
    recipes = readme_recipes()
    assert len(recipes) == 2 and next(iter(recipes)).startswith("Recipe: wait for tonight")
    for i, source in enumerate(recipes.values()):
        (tmp_path / f"recipe_{i}.py").write_text(source)
    assert parse_folder(tmp_path, env) == {
        "errors": {},
        "dags": ["patch_after_each_backup", "tonights_backup"],
    }


def test_asset_dag_reads_which_backup_succeeded_from_the_asset_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location(
        "vcenter_backup_asset", ROOT / "example_dags/vcenter_backup_asset.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (watcher,) = module.vcenter_backup.watchers
    assert watcher.trigger.serialize()[1]["states"] == ["SUCCEEDED"]
    payload = {
        "id": "20261201-220000-1",
        "type": "SCHEDULED",
        "state": "SUCCEEDED",
        "end_time": "2026-12-01T22:05:00",
    }

    class TriggeringEvents:
        """Looked up by asset, as Airflow's accessor is (an Asset is not hashable on Airflow 3.0)."""

        def __getitem__(self, asset: object) -> list[SimpleNamespace]:
            assert asset == module.vcenter_backup
            return [SimpleNamespace(extra={"from_trigger": True, "payload": payload})]

    events = TriggeringEvents()
    task_function = module.patch_after_backup.function  # what the task runs, undecorated
    assert task_function(triggering_asset_events=events) == ["20261201-220000-1"]
    assert "backup job 20261201-220000-1 (SCHEDULED) SUCCEEDED" in capsys.readouterr().out
