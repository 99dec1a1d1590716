"""Shared helpers of the benchmark scripts: Airflow set-up, the machine header, tables, the simulator.

Imports nothing of Airflow: call :func:`isolate_airflow` before the first ``import airflow``.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("administrator@vsphere.local", "VMware1!sim")


def isolate_airflow(log_level: str = "WARNING") -> str:
    """A throw-away AIRFLOW_HOME, no examples, quiet logs; answers the home. Call before importing airflow."""
    home = os.environ.get("BENCH_AIRFLOW_HOME", "")
    if not home:
        home = tempfile.mkdtemp(prefix="backupjob-bench-home-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(home, "dags")
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = log_level
    return home


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks stop the processes we started."""

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def vcenter_conn_json(port: int, timeout: float = 30) -> str:
    return json.dumps(
        {
            "conn_type": "vcenter_backup",
            "host": "http://127.0.0.1",
            "port": port,
            "login": ADMIN[0],
            "password": ADMIN[1],
            "extra": {"timeout": timeout},
        }
    )


# ---- the header -------------------------------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def header(title: str, what: str) -> str:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        f"## {title}",
        "",
        what,
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- machine: nproc={cores}, CPU: {_cpu_model()}, load average at start: {load}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"Airflow {_version('apache-airflow')}, "
        f"apache-airflow-providers-http {_version('apache-airflow-providers-http')}",
        f"- command: {Path(sys.executable).name} {' '.join(sys.argv)}",
        "",
    ]
    return "\n".join(lines)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; numbers are already formatted by the caller."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = [f"| {' | '.join(c.ljust(w) for c, w in zip(r, widths, strict=True))} |" for r in cells]
    fmt.insert(1, f"|{'|'.join('-' * (w + 2) for w in widths)}|")
    return "\n".join(fmt)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


# ---- the simulator as a process ----------------------------------------------------------------------
@contextlib.contextmanager
def simulator_process(workdir: Path, *extra: str, timeout: float = 20.0) -> Iterator[tuple[Any, int]]:
    """Run ``python -m airflow_provider_backupjob.simulator`` on 127.0.0.1; yields (Popen, port).

    The process is always stopped (SIGTERM, then SIGKILL after 10 s), also when the body fails.
    """
    port_file = workdir / "simulator.port"
    log = open(workdir / "simulator.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_backupjob.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError(f"the simulator exited early with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start within {timeout:.0f} s")
            time.sleep(0.05)
        yield proc, int(port_file.read_text())
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
