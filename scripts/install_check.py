"""`make install-check`: the wheel, installed as users install it, on the lowest and the highest Airflow.

For each (Airflow, Python) pair, in a fresh virtualenv under .install-check/ (no lock, no test extras):

1. ``pip install apache-airflow==X`` (plain pip, from the index), then ``pip install <the wheel>``;
2. ``airflow providers list`` shows airflow-provider-backupjob;
3. the simulator starts from that install (``python -m airflow_provider_backupjob.simulator``, run
   outside the checkout, so nothing is imported from the source tree);
4. the gate example DAG succeeds under ``airflow dags test`` against it.

The default pairs are the lowest Airflow of requirements/airflow-3.0.txt with the lowest Python and the
highest of requirements/airflow-3.3.txt with the highest. Prints a timing per step; exits 0 only if every
pair passed.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo import airflow_env, new_job, prepare, run_dag, start_simulator, stop_simulator

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".install-check"
PROVIDER = "airflow-provider-backupjob"


def pinned_airflow(lock: str) -> str:
    text = (ROOT / "requirements" / lock).read_text()
    match = re.search(r"^apache-airflow==(\S+)", text, re.MULTILINE)
    if not match:
        raise SystemExit(f"requirements/{lock} pins no apache-airflow")
    return match[1]


def find_python(name: str) -> str:
    """A command on PATH that runs, a path, or (pyenv's shims refuse unselected versions) pyenv's X.Y."""
    found = shutil.which(name)
    if found and subprocess.run([found, "-c", ""], capture_output=True, check=False).returncode == 0:
        return found
    version = name.removeprefix("python")
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False).stdout.strip()
    candidates = sorted(
        glob.glob(f"{root}/versions/{version}.*/bin/python{version}"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", Path(p).parent.parent.name)],
    )
    if not candidates:
        raise SystemExit(f"no interpreter for {name}: install it (pyenv install {version}) or pass a path")
    return candidates[-1]


class Steps:
    def __init__(self, label: str) -> None:
        self.label = label
        self.timings: list[tuple[str, float]] = []

    def run(self, name: str, cmd: list[str], log: Path, **kwargs: object) -> str:
        started = time.monotonic()
        print(f"  [{self.label}] {name} ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
        log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        took = time.monotonic() - started
        self.timings.append((name, took))
        if proc.returncode != 0:
            tail = "\n".join(f"    | {line}" for line in (proc.stdout + proc.stderr).splitlines()[-25:])
            raise SystemExit(f"[{self.label}] {name} failed (exit {proc.returncode}; log {log})\n{tail}")
        print(f"  [{self.label}] {name}: {took:.1f} s", flush=True)
        return str(proc.stdout)


def json_in(output: str) -> list[dict[str, str]]:
    """The JSON list in a command's stdout, past the log lines Airflow prints there first."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\[(?!\d{4}-)", output, re.MULTILINE):
        try:
            value, _ = decoder.raw_decode(output, match.start())
        except ValueError:
            continue
        if isinstance(value, list):
            return value
    raise SystemExit(f"no JSON list in the output:\n{output[-2000:]}")


def pip_summary(output: str) -> str:
    installed = [line for line in output.splitlines() if line.startswith("Successfully installed")]
    if not installed:
        return "nothing new installed"
    names = installed[-1].split()[2:]
    picked = [n for n in names if re.match(r"(apache-airflow|airflow-provider|cadwyn|fastapi)", n)]
    return f"{len(names)} packages, among them {' '.join(picked)}"


def check_pair(airflow_version: str, python: str, wheel: Path, reuse: bool) -> list[tuple[str, float]]:
    label = f"Airflow {airflow_version}"
    steps = Steps(label)
    work = WORK / f"airflow-{airflow_version}"
    venv = work / "venv"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    for stale in ("home", "run"):
        shutil.rmtree(work / stale, ignore_errors=True)
    if reuse and (venv / "bin" / "airflow").exists():
        print(f"  [{label}] --reuse: keeping {venv}", flush=True)
        steps.run(
            "pip uninstall (the provider)", [*pip, "uninstall", "-y", PROVIDER], work / "pip-uninstall.log"
        )
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        steps.run(f"virtualenv ({python})", [python, "-m", "venv", str(venv)], work / "venv.log")
        out = steps.run(
            f"pip install apache-airflow=={airflow_version}",
            [*pip, "install", "--progress-bar", "off", f"apache-airflow=={airflow_version}"],
            work / "pip-airflow.log",
        )
        print(f"    {pip_summary(out)}", flush=True)
    out = steps.run(
        f"pip install {wheel.name}",
        [*pip, "install", "--progress-bar", "off", str(wheel)],
        work / "pip-wheel.log",
    )
    print(f"    {pip_summary(out)}", flush=True)
    versions = json.loads(steps.run("pip list", [*pip, "list", "--format", "json"], work / "pip-list.log"))
    have = {v["name"].lower(): v["version"] for v in versions}
    if have.get("apache-airflow") != airflow_version:
        raise SystemExit(f"[{label}] installing the wheel changed Airflow to {have.get('apache-airflow')}")
    print(f"    apache-airflow {have['apache-airflow']}, {PROVIDER} {have.get(PROVIDER)}", flush=True)

    home = work / "home"
    home.mkdir()
    run_dir = work / "run"  # outside the checkout: the simulator and Airflow import the installed wheel
    run_dir.mkdir()
    bin_dir = venv / "bin"
    env = airflow_env(home, 0)
    env.pop("PYTHONPATH", None)
    listed = steps.run(
        "airflow providers list",
        [str(bin_dir / "airflow"), "providers", "list", "-o", "json"],
        work / "providers.log",
        env=env,
        cwd=run_dir,
        timeout=300,
    )
    providers = {p["package_name"]: p["version"] for p in json_in(listed)}
    if PROVIDER not in providers:
        raise SystemExit(f"[{label}] `airflow providers list` does not show {PROVIDER}: {sorted(providers)}")
    print(f"    airflow providers list: {PROVIDER} {providers[PROVIDER]}", flush=True)

    started = time.monotonic()
    sim, port = start_simulator(run_dir, python=str(bin_dir / "python"))
    steps.timings.append(("simulator started", time.monotonic() - started))
    print(f"  [{label}] simulator from the install on http://127.0.0.1:{port}", flush=True)
    try:
        env = airflow_env(home, port)
        env.pop("PYTHONPATH", None)
        started = time.monotonic()
        prepare(env, airflow=bin_dir / "airflow")
        steps.timings.append(("airflow db migrate + dags reserialize", time.monotonic() - started))
        started = time.monotonic()
        ok = run_dag(env, "vcenter_backup_gate", {"job_id": new_job(port)}, airflow=bin_dir / "airflow")
        steps.timings.append(("airflow dags test vcenter_backup_gate", time.monotonic() - started))
        if not ok:
            raise SystemExit(f"[{label}] the gate example DAG did not succeed")
    finally:
        stop_simulator(sim)
    return steps.timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--pair",
        action="append",
        metavar="AIRFLOW:PYTHON",
        help="e.g. 3.0.0:python3.10 (repeatable); default: the lowest and the highest",
    )
    parser.add_argument("--wheel", help="default: the one wheel in dist/")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep a virtualenv left by an earlier run (not fresh: not for CI)",
    )
    args = parser.parse_args()
    wheels = [Path(args.wheel)] if args.wheel else sorted((ROOT / "dist").glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in dist/ (make dist), found {len(wheels)}")
    pairs = (
        [tuple(p.split(":", 1)) for p in args.pair]
        if args.pair
        else [
            (pinned_airflow("airflow-3.0.txt"), "python3.10"),
            (pinned_airflow("airflow-3.3.txt"), "python3.13"),
        ]
    )
    WORK.mkdir(exist_ok=True)
    report = []
    for airflow_version, python in pairs:
        started = time.monotonic()
        timings = check_pair(airflow_version, find_python(python), wheels[0].resolve(), args.reuse)
        report.append((airflow_version, python, timings, time.monotonic() - started))
    print("\ninstall check: the wheel with plain pip into a fresh Airflow")
    for airflow_version, python, timings, total in report:
        steps = ", ".join(f"{name} {took:.0f} s" for name, took in timings)
        print(f"  Airflow {airflow_version} on {python}: PASSED in {total:.0f} s ({steps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
