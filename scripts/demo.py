"""`make demo`: run the example DAGs with `airflow dags test` against the bundled simulator.

Starts the simulator as a process on a free loopback port with one scripted backup job, points the
``vcenter_backup_default`` connection at it, and runs ``vcenter_backup_gate`` (poke mode) and then
``vcenter_backup_start_and_wait`` (deferrable; the trigger runs inline). Prints each poke and the final
status; exits 0 only when both DAG runs succeeded. ``--dag ID`` runs one DAG only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN = ("administrator@vsphere.local", "VMware1!sim")


def start_simulator(workdir: Path, python: str = sys.executable) -> tuple[subprocess.Popen[bytes], int]:
    """The simulator as a process of ``python`` (run from ``workdir``, so it imports what is installed)."""
    port_file = workdir / "simulator.port"
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "airflow_provider_backupjob.simulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--start-script",
            "SUCCEEDED:1:3",
        ],
        stdout=subprocess.DEVNULL,
        cwd=workdir,
        start_new_session=True,
    )
    for _ in range(200):  # up to 20 s
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text())
        if proc.poll() is not None:
            raise SystemExit(f"the simulator exited early with status {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the simulator did not start within 20 s")


def airflow_env(home: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "example_dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        VCENTER_BACKUP_POKE_INTERVAL="1",
        VCENTER_BACKUP_LOCATION="sftp://backup.example.com/vcsa/demo",
        AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT=json.dumps(
            {
                "conn_type": "vcenter_backup",
                "host": "http://127.0.0.1",
                "port": port,
                "login": ADMIN[0],
                "password": ADMIN[1],
                "extra": {"timeout": 10},
            }
        ),
        AIRFLOW_CONN_VCENTER_BACKUP_TARGET=json.dumps(
            {
                "conn_type": "generic",
                "login": "backup",
                "password": "demo-target-pw",
                "extra": {"backup_password": "Demo-backup-1"},
            }
        ),
    )
    return env


def sim_call(port: int, method: str, path: str, body: object | None = None) -> object:
    from urllib.request import Request, urlopen

    data = None if body is None else json.dumps(body).encode()
    req = Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback simulator
        return json.loads(resp.read() or b"null")


def stop_simulator(sim: subprocess.Popen[bytes]) -> None:
    os.killpg(sim.pid, signal.SIGTERM)
    try:
        sim.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(sim.pid, signal.SIGKILL)
        sim.wait(timeout=10)


def new_job(port: int) -> str:
    """A scripted job on the simulator: no status for 1 poll, in progress for 3, then SUCCEEDED."""
    job = sim_call(
        port, "POST", "/_sim/jobs", {"outcome": "SUCCEEDED", "none_polls": 1, "inprogress_polls": 3}
    )
    return str(job["id"])  # type: ignore[index]


def prepare(env: dict[str, str], airflow: Path = BIN / "airflow") -> None:
    """A fresh metadata database with the example DAGs in it (Airflow 3.0's `dags test` reads them there)."""
    for args in (["db", "migrate"], ["dags", "reserialize"]):
        proc = subprocess.run(
            [str(airflow), *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        if proc.returncode != 0:
            raise SystemExit(f"`airflow {' '.join(args)}` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


def run_dag(
    env: dict[str, str], dag_id: str, conf: dict[str, str] | None, airflow: Path = BIN / "airflow"
) -> bool:
    cmd = [str(airflow), "dags", "test", dag_id]
    if conf:
        cmd += ["--conf", json.dumps(conf)]
    print(f"\n$ {shlex.join(['airflow', *cmd[1:]])}", flush=True)
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=300, check=False, cwd=env["AIRFLOW_HOME"]
    )
    output = proc.stdout + proc.stderr
    keep = (
        "Backup job",
        "backup job",
        "Started backup",
        "Task instance",
        "Marking task",
        "state=",
        "Dag run",
        "DagRun Finished",
        "patching can start",
        "ERROR",
        "Error",
        "Traceback",
    )
    for line in output.splitlines():
        if any(k in line for k in keep):
            print("  " + line.strip()[:240])
    ok = proc.returncode == 0 and "state=success" in output.replace(
        "state=<DagRunState.SUCCESS", "state=success"
    )
    print(f"-> {dag_id}: {'SUCCESS' if ok else 'FAILED'} (exit code {proc.returncode})", flush=True)
    if not ok:
        (Path(env["AIRFLOW_HOME"]) / f"{dag_id}.log").write_text(output)
        print(f"   full output: {Path(env['AIRFLOW_HOME']) / f'{dag_id}.log'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dag", action="append", help="run only this DAG (repeatable)")
    args = parser.parse_args()
    workdir = ROOT / ".demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    home = Path(tempfile.mkdtemp(prefix="airflow-home-", dir=workdir))
    sim, port = start_simulator(workdir)
    try:
        env = airflow_env(home, port)
        print(f"vCenter simulator on http://127.0.0.1:{port}; AIRFLOW_HOME={home}", flush=True)
        prepare(env)
        results = []
        dags = args.dag or ["vcenter_backup_gate", "vcenter_backup_start_and_wait"]
        for dag_id in dags:
            conf = None
            if dag_id.startswith("vcenter_backup_gate"):
                conf = {"job_id": new_job(port)}
            results.append(run_dag(env, dag_id, conf))
        stats = sim_call(port, "GET", "/_sim/stats")
        print(f"\nsimulator: {json.dumps({k: stats[k] for k in ('logins', 'logouts', 'open_sessions')})}")  # type: ignore[index]
        return 0 if all(results) else 1
    finally:
        stop_simulator(sim)


if __name__ == "__main__":
    sys.exit(main())
