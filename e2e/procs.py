"""Processes for the e2e run: each in its own session, logged to a file, stopped in bounded time.

Stopping a service kills its process group; :func:`sweep` then finds, through the :class:`Registry`, and
kills by pid whatever that did not reach (Airflow's task supervisors make process groups of their own,
Chromium makes sessions of its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
E2E_MARKER = "AIRFLOW_PROVIDER_BACKUPJOB_E2E_RUN"


class E2EError(Exception):
    """A check or a wait failed; the message says what, and shows the relevant log's tail."""


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as err:
        return f"    (no log: {err})"
    return "\n".join("    | " + line[:300] for line in text[-lines:]) or "    (empty log)"


class Service:
    """One long-running process, started in its own session with stdout and stderr in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path, cwd: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.cwd = cwd
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        if REGISTRY is not None:
            REGISTRY.add_session(self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        return f"  last lines of {self.log}:\n{tail(self.log, lines)}"

    def check_alive(self) -> None:
        if self.proc is not None and not self.alive():
            raise E2EError(f"{self.name} exited with status {self.proc.returncode}\n{self.tail()}")

    def stop(self, grace: float = 15.0) -> str:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; says how it ended."""
        if self.proc is None:
            return "not started"
        how = "exited by itself" if self.proc.poll() is not None else "stopped by SIGTERM"
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            how = f"killed (SIGKILL) after {grace:g} s"
        # The leader may be gone while members of its group linger: kill those too.
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return f"{how} (status {self.proc.returncode})"

    def kill(self) -> str:
        """SIGKILL the process group at once: no clean-up runs."""
        if self.proc is None:
            return "not started"
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return f"killed (SIGKILL) (status {self.proc.returncode})"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    *,
    services: tuple[Service, ...] = (),
    interval: float = 0.5,
) -> T:
    """Call ``probe`` until it returns something other than None (or False); bounded by ``timeout``.

    Fails early when one of ``services`` dies, and on time-out shows the tail of their logs.
    """
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        for svc in services:
            svc.check_alive()
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except Exception as err:  # noqa: BLE001 - any error of a probe means "not yet"
            last_error = f" (last error: {type(err).__name__}: {err})"
        if time.monotonic() >= deadline:
            logs = "\n".join(svc.tail() for svc in services)
            raise E2EError(f"timed out after {timeout:g} s waiting for {what}{last_error}\n{logs}")
        time.sleep(interval)


class Registry:
    """What tells this run's processes from others', saved in a file so that a later run can clean up
    after a hard-killed one. A process is ours if any of these holds:

    * its environment carries ``E2E_MARKER=<marker>`` (inherited by everything started from run.py);
    * its session is one our services were started in, and it started after the run did (Airflow's
      components rewrite their process titles over their environment; task supervisors change process
      group but keep the session);
    * its command line names one of our paths (Chromium's helpers get a clean environment and a session
      of their own, but all name our profile directory).
    """

    def __init__(self, path: Path, marker: str) -> None:
        self.path = path
        self.marker = marker
        self.since = time.time()
        self.sessions: list[int] = []
        self.needles: list[str] = []

    def add_session(self, pid: int) -> None:
        self.sessions.append(pid)
        self.save()

    def add_needle(self, text: str) -> None:
        self.needles.append(text)
        self.save()

    def save(self) -> None:
        data = {
            "marker": self.marker,
            "since": self.since,
            "sessions": self.sessions,
            "needles": self.needles,
        }
        self.path.write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> Registry | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        reg = cls(path, str(data["marker"]))
        reg.since, reg.sessions, reg.needles = (
            float(data["since"]),
            list(data["sessions"]),
            list(data["needles"]),
        )
        return reg


REGISTRY: Registry | None = None  # set by run.py; Service.start registers each session in it


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def leftovers(reg: Registry) -> list[tuple[int, str]]:
    """Our processes still alive (pid, command line), except this one; zombies do not count."""
    found = []
    marker = f"{E2E_MARKER}={reg.marker}".encode()
    sessions = set(reg.sessions)
    boot, ticks = _boot_time(), os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            state, session, started = fields[0], int(fields[3]), boot + int(fields[19]) / ticks
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ours = (
                (session in sessions and started >= reg.since - 1)
                or any(needle in cmdline for needle in reg.needles)
                or marker in (entry / "environ").read_bytes().split(b"\0")
            )
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if ours and state != "Z":
            found.append((int(entry.name), cmdline[:160]))
    return found


def sweep(reg: Registry, grace: float = 5.0) -> list[tuple[int, str]]:
    """Kill (by pid) the processes :func:`leftovers` finds; returns what it found at first."""
    found = leftovers(reg)
    for pid, _ in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and leftovers(reg):
        time.sleep(0.2)
    for pid, _ in leftovers(reg):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found
