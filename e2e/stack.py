"""The stack under test: the bundled vCenter simulator and Airflow's own components, on 127.0.0.1.

All state lives under ``.e2e/`` (wiped at the start): ``home/`` is AIRFLOW_HOME (SQLite), ``logs/`` has
one log per process plus the task logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import procs
from procs import E2EError, Service, tail, wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SIM_USER, SIM_PASSWORD = "administrator@vsphere.local", "VMware1!sim"
UI_USER = "admin"
# Jobs started by POST (vcenter_backup_start_and_wait): no status for 1 poll, in progress for 2.
START_SCRIPT = "SUCCEEDED:1:2"
# Seconds between pokes/polls. Not 1: with 1 s, a rescheduled sensor is often queued again before the
# scheduler has seen its previous try's exit (same try number), and Airflow 3.3.2's scheduler then fails it
# as "state changed externally" (the LocalExecutor flavour of apache/airflow#67287; seen in 2 runs of 3).
POKE_INTERVAL = "3"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    work: Path
    services: list[Service] = field(default_factory=list)
    sim_port: int = 0
    api_port: int = 0
    ui_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    # Simulator ----------------------------------------------------------------------------------------
    def start_simulator(self) -> None:
        port_file = self.work / "simulator.port"
        cmd = [sys.executable, "-m", "airflow_provider_backupjob.simulator", "--port", "0"]
        cmd += ["--port-file", str(port_file), "--start-script", START_SCRIPT]
        sim = Service("simulator", cmd, self.base_env(), self.logs, ROOT).start()
        self.services.append(sim)

        def port() -> int | None:
            text = port_file.read_text().strip() if port_file.exists() else ""
            return int(text) if text else None

        self.sim_port = wait_for("the simulator's port file", port, 20, services=(sim,), interval=0.1)

    # Airflow ------------------------------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def airflow_env(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        if not hasattr(self, "_secrets"):
            self._secrets = {
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            }
        env = self.base_env()
        env.update(self._secrets)
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.home / 'airflow.db'}",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="8",
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "example_dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__TEST_CONNECTION="Enabled",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.api_url}/execution/",
            # Auth: Airflow 3's default SimpleAuthManager with one admin whose password we choose.
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{UI_USER}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.home / "passwords.json"),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.api_port),
            AIRFLOW__API__BASE_URL=self.api_url,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API__EXPOSE_CONFIG="False",
            # Fast: parse often, schedule often, no stats noise.
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="30",
            AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
            AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL="0",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
            AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5",
            AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
            # A SIGKILLed triggerer's triggers go to another one once its heartbeat is this old
            # (default 30 s): the restart scenarios (deferred.py) wait for it.
            AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="10",
            # A task supervisor notices its task's exit up to this many seconds late (default 5). A late
            # exit event of a deferred task, seen after its trigger already fired and the task was queued
            # again, makes the scheduler fail it ("state changed externally"; apache/airflow#67287).
            AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="1",
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(self.logs / "tasks"),
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            # The example DAGs and their connections, pointing at the simulator.
            VCENTER_BACKUP_POKE_INTERVAL=POKE_INTERVAL,
            VCENTER_BACKUP_LOCATION="sftp://backup.example.com/vcsa/e2e",
            AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT=json.dumps(
                {
                    "conn_type": "vcenter_backup",
                    "host": "http://127.0.0.1",
                    "port": self.sim_port,
                    "login": SIM_USER,
                    "password": SIM_PASSWORD,
                    "extra": {"timeout": 10},
                }
            ),
            AIRFLOW_CONN_VCENTER_BACKUP_TARGET=json.dumps(
                {
                    "conn_type": "generic",
                    "login": "backup",
                    "password": "e2e-target-pw",
                    "extra": {"backup_password": "E2e-backup-1"},
                }
            ),
        )
        return env

    def airflow(self, *args: str, timeout: float = 120) -> tuple[int, str]:
        """Run one ``airflow`` CLI command (bounded); its exit status and output, also logged."""
        log = self.logs / f"cli-{'-'.join(args[:2])}.log"
        with log.open("w") as out:
            out.write(f"$ airflow {' '.join(args)}\n")
            out.flush()
            proc = subprocess.Popen(  # noqa: S603 - our own argv
                [str(BIN / "airflow"), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.airflow_env(),
                cwd=ROOT,
                start_new_session=True,
            )
            if procs.REGISTRY is not None:
                procs.REGISTRY.add_session(proc.pid)
            try:
                status = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                raise E2EError(
                    f"`airflow {' '.join(args)}` did not finish within {timeout:g} s\n{tail(log)}"
                ) from None
        return status, log.read_text(errors="replace")

    def start_airflow(self) -> None:
        self.api_port = free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({UI_USER: self.ui_password}) + "\n")
        started = time.monotonic()
        status, _ = self.airflow("db", "migrate", timeout=240)
        if status != 0:
            raise E2EError(
                f"`airflow db migrate` failed (status {status})\n{tail(self.logs / 'cli-db-migrate.log')}"
            )
        print(f"  airflow db migrate: {time.monotonic() - started:.1f} s", flush=True)
        env = self.airflow_env()
        for name in COMPONENTS:
            cmd = [str(BIN / "airflow"), name]
            if name == "api-server":
                cmd += ["--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"]
            self.services.append(Service(name, cmd, env, self.logs, ROOT).start())

    def restart(self, name: str, sig: signal.Signals) -> str:
        """Stop the service ``name`` with ``sig`` (SIGTERM: it may exit cleanly; SIGKILL: not), then
        start it again from the same command; says how the old process ended."""
        old = self.service(name)
        how = old.kill() if sig is signal.SIGKILL else old.stop(grace=60)
        self.services[self.services.index(old)] = Service(name, old.cmd, old.env, self.logs, ROOT).start()
        return how

    def airflow_services(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.name in COMPONENTS)

    def stop(self) -> list[str]:
        """Stop every service, newest first: Airflow's components before the simulator."""
        report = []
        for svc in reversed(self.services):
            report.append(f"{svc.name} (pid {svc.proc.pid if svc.proc else '-'}): {svc.stop()}")
        return report
