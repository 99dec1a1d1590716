"""`make e2e`: the provider in a real Airflow (api-server, scheduler, dag-processor, triggerer).

Starts the bundled vCenter simulator and Airflow's components from .venv on 127.0.0.1 with a fresh
AIRFLOW_HOME under .e2e/ (SQLite, LocalExecutor), then checks, through the public REST API v2:

* the example DAGs run by the scheduler: the gate in poke, reschedule and deferrable mode on a job that
  succeeds, on a job that FAILS and on a missing job id, and vcenter_backup_start_and_wait;
* a deferred start-and-wait marked failed through the API: its backup is cancelled; and the triggerer
  restarted mid-wait (SIGTERM, then SIGKILL): no cancel, the wait resumes, the run succeeds;
* ``airflow connections test vcenter_backup_default`` (CLI) against the simulator;
* the Connections UI in headless Chromium: the provider's form, Save, Test (success, then failure with a
  wrong password); screenshots in docs/screenshots/;
* that no simulator session is left open, and (after stopping everything) that no process is left.

Prints a summary table; exits 0 only if every check passed. Logs: .e2e/logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deferred
import procs
from api import AirflowApi
from extras import ensure_extras
from procs import E2E_MARKER, E2EError, Registry, sweep, wait_for
from report import Results
from scenarios import ASSET_DAG, Scenario, all_scenarios, check_all, scheduled_wave, trigger_all, wait_all
from stack import POKE_INTERVAL, ROOT, UI_USER, Stack

from airflow_provider_backupjob.simulator.client import SimulatorClient

WORK = ROOT / ".e2e"
RUN_FILE = "run.json"  # what identifies this run's processes (procs.Registry)
SHOTS = ROOT / "docs" / "screenshots"
DAG_IDS = {
    "vcenter_backup_gate",
    "vcenter_backup_gate_reschedule",
    "vcenter_backup_gate_deferrable",
    "vcenter_backup_start_and_wait",
    "vcenter_backup_tonight",
    "vcenter_backup_asset",
}
HEALTHY = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so that the `finally` blocks stop everything


def clean_work_dir() -> None:
    """Wipe .e2e/; first stop (by pid) any process a previous, hard-killed run left behind."""
    previous = Registry.load(WORK / RUN_FILE)
    if previous is not None:
        for pid, cmd in sweep(previous):
            print(f"  stopped pid {pid}, left by a previous run: {cmd}", flush=True)
    shutil.rmtree(WORK, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:120] if lines else "(no output)"


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:120]


def healthy(api: AirflowApi) -> dict[str, Any] | None:
    health = api.health()
    return health if all((health.get(k) or {}).get("status") == "healthy" for k in HEALTHY) else None


def dags_ready(api: AirflowApi) -> dict[str, Any] | None:
    dags = api.dags()
    return dags if dags.keys() >= DAG_IDS and not any(dags[d]["is_paused"] for d in DAG_IDS) else None


def cli_connection_test(stack: Stack, sim: SimulatorClient, results: Results) -> None:
    before = sim.stats()
    started = time.monotonic()
    status, output = stack.airflow("connections", "test", "vcenter_backup_default", timeout=120)
    after = sim.stats()
    said = "Connection success!" if "Connection success!" in output else _last_line(output)
    logins, logouts = after["logins"] - before["logins"], after["logouts"] - before["logouts"]
    ok = status == 0 and "Connection success!" in output and logins >= 1 and logouts == logins
    results.add(
        "CLI: airflow connections test",
        "exit 0, 'Connection success!'",
        f"exit {status}, {said}; simulator logins +{logins}, logouts +{logouts}",
        ok,
        time.monotonic() - started,
    )


def run_wave(api: AirflowApi, sim: SimulatorClient, stack: Stack, wave: list[Scenario]) -> None:
    trigger_all(api, sim, wave)
    try:
        wait_all(api, wave, timeout=180, services=stack.airflow_services())
    finally:
        check_all(api, sim, [sc for sc in wave if sc.run_state in ("success", "failed")])


def ui_test(stack: Stack, api: AirflowApi, results: Results) -> None:
    from ui import ConnectionsUiTest  # Playwright is installed by ensure_extras

    SHOTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def record(name: str, expected: str, detail: str, ok: bool) -> None:
        results.add(name, expected, detail, ok, time.monotonic() - started)

    ConnectionsUiTest(stack, api, SHOTS, record).run()


def no_state_mismatch(stack: Stack, results: Results) -> None:
    """A run can pass or fail for the wrong reason when the scheduler fails a task "externally"."""
    text = (stack.logs / "scheduler.log").read_text(errors="replace")
    hits = [line for line in text.splitlines() if "task-state-changed-externally" in line]
    results.add(
        "scheduler: no task state changed externally",
        "none",
        "none" if not hits else f"{len(hits)}: {hits[0][:200]} (Airflow race, apache/airflow#67287)",
        not hits,
    )


def sessions_closed(sim: SimulatorClient, results: Results) -> None:
    started = time.monotonic()
    try:
        stats = wait_for("the simulator's open_sessions to drop to 0", _no_open_sessions(sim), 30)
    except E2EError:
        stats = sim.stats()
    keys = ("logins", "logouts", "login_failures", "open_sessions")
    results.add(
        "simulator: no session left open",
        "open_sessions 0",
        ", ".join(f"{k} {stats.get(k)}" for k in keys),
        stats.get("open_sessions") == 0,
        time.monotonic() - started,
    )


def _no_open_sessions(sim: SimulatorClient) -> Any:
    def probe() -> dict[str, Any] | None:
        stats = sim.stats()
        return stats if stats["open_sessions"] == 0 else None

    return probe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--no-ui", action="store_true", help="skip the browser part")
    args = parser.parse_args()
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, _terminate)
    marker = uuid.uuid4().hex
    os.environ[E2E_MARKER] = marker  # inherited by every process started from here on
    clean_work_dir()
    (WORK / "logs").mkdir(parents=True)
    registry = procs.REGISTRY = Registry(WORK / RUN_FILE, marker)
    registry.save()
    results = Results()
    stack = Stack(WORK)
    api: AirflowApi | None = None
    try:
        print("== extras (Playwright, chromium)", flush=True)
        if not args.no_ui:
            ensure_extras(WORK / "logs")
        print("== starting the simulator and Airflow", flush=True)
        stack.start_simulator()
        sim = SimulatorClient(stack.sim_url)
        stack.start_airflow()
        api = AirflowApi(stack.api_url)
        comps = stack.airflow_services()
        wait_for(
            "Airflow's components to report healthy (/api/v2/monitor/health)",
            lambda: healthy(api),
            180,
            services=comps,
            interval=1,
        )
        token = api.login(UI_USER, stack.ui_password)
        anonymous = api.status_without_token("/api/v2/dags")
        results.add(
            "REST API: JWT from POST /auth/token",
            "a JWT; 401 without it",
            f"JWT ({token.count('.') + 1} parts, {len(token)} chars); GET /api/v2/dags without: {anonymous}",
            token.count(".") == 2 and anonymous == 401,
        )
        wait_for("the example DAGs to be parsed and unpaused", lambda: dags_ready(api), 120, services=comps)
        results.add(
            "Airflow up",
            "4 components healthy, DAGs on",
            f"api-server :{stack.api_port}, scheduler, dag-processor, triggerer; "
            f"{len(DAG_IDS)} DAGs unpaused",
            True,
            time.monotonic() - t0,
        )

        # the asset watcher logs in once and holds its session: let it, before counting the CLI's
        wait_for(
            "the asset watcher's session", lambda: sim.stats()["open_sessions"] >= 1, 120, services=comps
        )
        print("== airflow connections test (CLI)", flush=True)
        cli_connection_test(stack, sim, results)

        scenarios = all_scenarios()
        try:
            for wave in (1, 2):
                print(f"== DAG runs, wave {wave}", flush=True)
                run_wave(api, sim, stack, [sc for sc in scenarios if sc.wave == wave])
            print("== wave 3: the backup schedule, tonight's gate, the asset watcher", flush=True)
            scenarios.append(
                scheduled_wave(api, sim, stack.airflow_services(), results.add, float(POKE_INTERVAL))
            )
        finally:
            for sc in scenarios:
                if sc.run_id:
                    results.add_scenario(sc)

        print("== deferred start-and-wait: a user's kill, triggerer restarts (SIGTERM, SIGKILL)", flush=True)
        deferred.run_all(api, sim, stack, results)

        no_state_mismatch(stack, results)

        if not args.no_ui:
            print("== Connections UI (Chromium)", flush=True)
            ui_test(stack, api, results)

        print("== simulator sessions", flush=True)
        # the asset watcher holds one session while it runs: pausing its DAG drops the watcher at
        # the next parse, and the watcher logs out
        api.http.patch(f"/api/v2/dags/{ASSET_DAG}", json={"is_paused": True}).raise_for_status()
        with contextlib.suppress(E2EError):
            wait_for("the watcher to log out", _no_open_sessions(sim), 120, interval=1)
        sessions_closed(sim, results)
    except (E2EError, KeyboardInterrupt) as err:
        print(f"\nE2E ABORTED: {err}", flush=True)
        results.add("run completed", "all steps ran", f"aborted: {_first_line(err)}", False)
    except Exception as err:  # noqa: BLE001 - whatever broke, stop everything and print the summary
        traceback.print_exc()
        results.add(
            "run completed", "all steps ran", f"aborted: {type(err).__name__}: {_first_line(err)}", False
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        if api is not None:
            api.close()
        print("== stopping", flush=True)
        for line in stack.stop():
            print(f"  {line}", flush=True)
        left = sweep(registry)
        results.add(
            "no process left behind",
            "none",
            "none" if not left else f"{len(left)} killed: " + "; ".join(c[:40] for _, c in left),
            not left,
        )
    elapsed = time.monotonic() - t0
    print(f"\n{results.table()}\n")
    print(f"logs: {WORK / 'logs'}; screenshots: {SHOTS}")
    verdict = "PASSED" if results.passed else "FAILED"
    print(
        f"E2E {verdict}: {sum(c.ok for c in results.checks)}/{len(results.checks)} checks in {elapsed:.0f} s"
    )
    return 0 if results.passed else 1


if __name__ == "__main__":
    sys.exit(main())
