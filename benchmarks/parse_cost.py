"""DAG-parse cost: the time a DAG file pays to import ``airflow_provider_backupjob.sensors.backup_job``.

Every sample is a fresh interpreter (``python -c``): it imports ``airflow.sdk`` (as every DAG file
does), then times the import under test with ``time.perf_counter``. Baselines from the same run:
``import airflow.sdk`` itself, a small standard sensor module imported the same way, and our module
once the SDK's sensor machinery (``BaseSensorOperator``) is already loaded, i.e. what a DAG file
that already uses a sensor pays for ours. Samples are interleaved so machine noise hits all alike.
One more child runs with ``-X importtime`` to list what our import pulls in beyond ``airflow.sdk``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import _common as c

OURS = "airflow_provider_backupjob.sensors.backup_job"
BASELINE = "airflow.providers.standard.sensors.time_delta"
TARGET_MS = 50.0

# label -> (code run before the timer, module imported inside the timer)
VARIANTS = {
    "import airflow.sdk (fresh interpreter)": ("", "airflow.sdk"),
    f"{BASELINE} (standard sensor) on top of airflow.sdk": ("import airflow.sdk", BASELINE),
    f"{OURS} on top of airflow.sdk": ("import airflow.sdk", OURS),
    f"{OURS} on top of airflow.sdk + BaseSensorOperator": (
        "import airflow.sdk; from airflow.sdk import BaseSensorOperator",
        OURS,
    ),
}
CHILD = """
import time
{setup}
t = time.perf_counter()
import {module}
print(time.perf_counter() - t)
"""


def sample(setup: str, module: str, env: dict[str, str]) -> float:
    code = CHILD.format(setup=setup, module=module)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return float(proc.stdout.strip().splitlines()[-1])


def import_profile(env: dict[str, str], top: int = 10) -> tuple[list[list[str]], float, int]:
    """Top modules by self time that ``import OURS`` loads after ``import airflow.sdk``."""
    code = f"import sys, airflow.sdk; sys.stderr.write('--MARK--\\n'); sys.stderr.flush(); import {OURS}"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = proc.stderr.split("--MARK--", 1)[1].splitlines()
    entries = []
    for line in lines:
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[len("import time:") :].split("|", 2))
        entries.append((int(self_us), int(cumulative_us), name))
    total_self = sum(e[0] for e in entries) / 1e3
    rows = [
        [f"`{name.strip()}`", f"{s / 1e3:.1f}", f"{cum / 1e3:.1f}"]
        for s, cum, name in sorted(entries, reverse=True)[:top]
    ]
    return rows, total_self, len(entries)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 3 samples per variant")
    p.add_argument("--samples", type=int, default=None, help="samples per variant (default 15)")
    args = p.parse_args()
    c.stop_on_sigterm()
    n = args.samples or (3 if args.quick else 15)
    home = c.isolate_airflow()
    env = dict(os.environ, AIRFLOW_HOME=home)
    print(c.header("DAG-parse cost", __doc__.split("\n\n")[0].strip()), flush=True)
    started = time.monotonic()
    for setup, module in VARIANTS.values():  # warm-up: airflow.cfg, bytecode caches
        sample(setup, module, env)
    times: dict[str, list[float]] = {label: [] for label in VARIANTS}
    for _ in range(n):
        for label, (setup, module) in VARIANTS.items():
            times[label].append(sample(setup, module, env))
    base_median = c.median(times[list(VARIANTS)[1]])
    rows = []
    for label, values in times.items():
        ms = [v * 1e3 for v in values]
        rows.append(
            [
                label,
                str(len(ms)),
                f"{c.median(ms):.1f}",
                f"{c.percentile(ms, 90):.1f}",
                f"{min(ms):.1f}",
                c.ratio(c.median(values), base_median),
            ]
        )
    print(c.table(["import", "samples", "median ms", "p90 ms", "min ms", "vs standard sensor"], rows))
    ours = c.median(times[f"{OURS} on top of airflow.sdk"]) * 1e3
    verdict = "meets" if ours < TARGET_MS else "**misses**"
    print(f"\nTarget: ours under {TARGET_MS:.0f} ms on top of airflow.sdk: median {ours:.1f} ms, {verdict}.")
    rows, total_self, count = import_profile(env)
    print(
        f"\n### What `import {OURS}` loads beyond airflow.sdk (`python -X importtime`, one child)\n\n"
        f"{count} modules, {total_self:.1f} ms self time in all; the top 10 by self time "
        "(cumulative includes the modules each one imports):\n"
    )
    print(c.table(["module", "self ms", "cumulative ms"], rows))
    print(f"\n{time.monotonic() - started:.0f} s in all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
