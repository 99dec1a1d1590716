"""What `make e2e` needs beyond the project's virtualenv, installed idempotently (fast when present).

* Playwright for Python, pinned in requirements/e2e.txt, into the running interpreter's environment (.venv)
  with the project's uv. It never downloads a browser: it drives Debian's chromium.
* Debian's ``chromium`` (/usr/bin/chromium) through apt-get, when missing (needs root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from procs import E2EError, tail

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements" / "e2e.txt"
UV = ROOT / ".tools" / "bin" / "uv"
CHROMIUM = Path("/usr/bin/chromium")


def _run(cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> None:
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.run(  # noqa: S603 - fixed argv
                cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False, env=env
            )
        except subprocess.TimeoutExpired as err:
            raise E2EError(f"`{' '.join(cmd)}` did not finish within {timeout:g} s\n{tail(log)}") from err
    if proc.returncode != 0:
        raise E2EError(f"`{' '.join(cmd)}` failed with status {proc.returncode}\n{tail(log)}")
    print(f"  {' '.join(cmd[:4])} ... : {time.monotonic() - started:.1f} s", flush=True)


def ensure_playwright(log: Path) -> None:
    if UV.exists():
        cmd = [str(UV), "pip", "install", "--python", sys.executable, "-r", str(REQUIREMENTS)]
    else:  # `make e2e` always has uv; running e2e/run.py by hand without it still works
        cmd = [sys.executable, "-m", "pip", "install", "-r", str(REQUIREMENTS)]
    _run(cmd, log, timeout=300)


def ensure_chromium(log: Path) -> None:
    if CHROMIUM.exists():
        return
    if os.geteuid() != 0:
        raise E2EError(f"{CHROMIUM} is missing; install Debian's chromium: sudo apt-get install -y chromium")
    apt = shutil.which("apt-get")
    if apt is None:
        raise E2EError(f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"  {CHROMIUM} missing: installing Debian's chromium (apt-get)", flush=True)
    _run([apt, "update", "-q"], log, timeout=300, env=env)
    _run([apt, "install", "-y", "-q", "chromium"], log, timeout=600, env=env)
    if not CHROMIUM.exists():
        raise E2EError(f"apt-get installed chromium but {CHROMIUM} is still missing\n{tail(log)}")


def ensure_extras(log_dir: Path) -> None:
    log = log_dir / "install-extras.log"
    ensure_playwright(log)
    ensure_chromium(log)
