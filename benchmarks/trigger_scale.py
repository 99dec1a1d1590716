"""Scale: N BackupJobTriggers in one asyncio event loop against the simulator in its own process.

For each N the same scenario runs twice, each time in a fresh worker process (this script with
``--worker``) so that memory and CPU start from the same place:

* ours: ``BackupJobTrigger(job_id, poll_interval=interval)`` consumed with ``async for``; it polls
  until the job ends on the loop's shared session (one login for all; ``BACKUPJOB_SHARED_SESSIONS=0``:
  one login and logout per trigger);
* theirs: the http provider's ``HttpTrigger`` polling the same ``GET /api/appliance/recovery/backup/job/{id}``
  with the ``vmware-api-session-id`` of one session made before the run. HttpTrigger makes one request
  and yields one event, so polling is emulated: run a new HttpTrigger once per poll, then
  ``asyncio.sleep(interval)``, until the body says SUCCEEDED or FAILED.

Every job answers INPROGRESS 9 times and then SUCCEEDED: 10 polls and 9 waits, so the ideal wall
time is 9 x interval. Measured in the worker, over the run of the N triggers only: wall time, event
loop lag (a ticker sleeping 10 ms records its overshoot), RSS growth (before vs the peak sampled every
100 ms, per trigger), process CPU per poll (polls counted by the simulator), and the simulator's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

POLLS = 10  # 9 INPROGRESS answers, then SUCCEEDED
JOB_PATH = "/api/appliance/recovery/backup/job/{}"
KINDS = {"ours": "BackupJobTrigger", "theirs": "HttpTrigger (emulated polling)"}


# ---- the worker: one scenario in one event loop -----------------------------------------------------
def _login(base_url: str) -> str:
    import urllib.request

    token = base64.b64encode(f"{c.ADMIN[0]}:{c.ADMIN[1]}".encode()).decode()
    req = urllib.request.Request(
        f"{base_url}/api/session",
        method="POST",
        headers={"Authorization": f"Basic {token}", "vmware-use-header-authn": "true"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read()))


def _logout(base_url: str, session: str) -> None:
    import urllib.request

    req = urllib.request.Request(
        f"{base_url}/api/session", method="DELETE", headers={"vmware-api-session-id": session}
    )
    with urllib.request.urlopen(req, timeout=30):
        pass


async def _ours(job_id: str, interval: float, limit: float) -> bool:
    from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger

    trigger = BackupJobTrigger(
        job_id=job_id, poll_interval=interval, deadline=time.time() + limit, max_outage=60
    )
    payload: dict[str, Any] = {}
    async for event in trigger.run():
        payload = event.payload
    return payload.get("status") == "terminal" and payload["job"]["state"] == "SUCCEEDED"


async def _theirs(job_id: str, interval: float, session: str, conn_id: str = "sim_http") -> bool:
    from airflow.providers.http.triggers.http import HttpTrigger

    for _ in range(4 * POLLS):  # bounded: the job ends after POLLS polls
        trigger = HttpTrigger(
            http_conn_id=conn_id,
            method="GET",
            endpoint=JOB_PATH.format(job_id),
            headers={"vmware-api-session-id": session, "Accept": "application/json"},
        )
        payload: dict[str, Any] = {}
        async for event in trigger.run():
            payload = event.payload
        if payload.get("status") != "success":
            return False
        state = json.loads(base64.b64decode(payload["response"]["content"]))["state"]
        if state in ("SUCCEEDED", "FAILED"):
            return state == "SUCCEEDED"
        await asyncio.sleep(interval)
    return False


async def _scenario(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    from airflow_provider_backupjob.simulator import SimulatorClient

    base_url = f"http://127.0.0.1:{args.port}"
    sim = SimulatorClient(base_url, timeout=30)
    me, sim_proc = psutil.Process(), psutil.Process(args.sim_pid)
    limit = 4 * POLLS * args.interval + 120
    session = _login(base_url) if args.worker == "theirs" else ""

    def one(job_id: str, interval: float) -> Any:
        return _ours(job_id, interval, limit) if args.worker == "ours" else _theirs(job_id, interval, session)

    spread = args.interval / args.n if args.start == "spread" else 0.0

    async def started(i: int, job_id: str) -> bool:
        if spread:
            await asyncio.sleep(i * spread)
        return bool(await one(job_id, args.interval))

    # warm-up: one short wait, so that lazy imports, caches and pools exist before the measurement
    assert await one(sim.add_job(inprogress_polls=1), 0.01)
    jobs = [sim.add_job(outcome="SUCCEEDED", none_polls=0, inprogress_polls=POLLS - 1) for _ in range(args.n)]
    gc.collect()
    if args.gc_freeze:  # what the loop lag would be if the imported heap were out of the collector's reach
        gc.freeze()
    before = sim.stats()
    rss0, cpu0, sim_cpu0 = me.memory_info().rss, me.cpu_times(), sim_proc.cpu_times()
    peak, lags, stop = [rss0], [], asyncio.Event()
    gc_began, gc_pauses, gc_freed = [0.0, 0.0], [], [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:  # each garbage collection: wall and CPU time
        if phase == "start":
            gc_began[:] = time.perf_counter(), time.thread_time()
        else:
            wall, cpu = time.perf_counter() - gc_began[0], time.thread_time() - gc_began[1]
            gc_pauses.append((info["generation"], wall, cpu))
            gc_freed[0] += info["collected"]

    gc.callbacks.append(on_gc)

    async def ticker() -> None:
        for i in range(int(limit / 0.01) + 1):  # bounded; ends when the triggers are done
            if stop.is_set():
                return
            t, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.01)
            lags.append((t - t0, time.perf_counter() - t - 0.01, time.thread_time() - cpu))
            if i % 10 == 0:
                peak.append(me.memory_info().rss)

    t0 = time.perf_counter()
    tick = asyncio.create_task(ticker())
    results = await asyncio.wait_for(
        asyncio.gather(*(started(i, j) for i, j in enumerate(jobs)), return_exceptions=True), limit
    )
    wall = time.perf_counter() - t0
    cpu1, sim_cpu1 = me.cpu_times(), sim_proc.cpu_times()
    peak.append(me.memory_info().rss)
    stop.set()
    await tick
    gc.callbacks.remove(on_gc)
    after = sim.stats()
    if session:
        _logout(base_url, session)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    by_route = {
        k: after["requests_by_route"].get(k, 0) - before["requests_by_route"].get(k, 0)
        for k in after["requests_by_route"]
    }
    all_lags = [lag for _, lag, _ in lags]
    steady = [lag for at, lag, _ in lags if at > min(args.interval, 1.0)]
    return {
        "kind": args.worker,
        "n": args.n,
        "interval": args.interval,
        "start": args.start,
        "wall": wall,
        "ideal": (POLLS - 1) * args.interval + spread * (args.n - 1),
        "ok": sum(r is True for r in results),
        "errors": errors[:3],
        "lag_p50": c.percentile(all_lags, 50),
        "lag_p99": c.percentile(all_lags, 99),
        "lag_max": max(all_lags, default=0.0),
        "lag_max_steady": max(steady, default=0.0),
        "lag_over_100ms": sum(lag > 0.1 for lag in all_lags),
        # the loop thread's own CPU time within the late tick: near the lag when the loop was busy,
        # far below it when the process was not running (another process had the core)
        "lag_max_cpu": max((min(lag, cpu) for _, lag, cpu in lags), default=0.0),
        "gc_max": max((wall for _, wall, _ in gc_pauses), default=0.0),
        "gc_gen2": sum(g == 2 for g, _, _ in gc_pauses),
        "gc_cpu": sum(cpu for _, _, cpu in gc_pauses),
        "gc_freed": gc_freed[0],
        "rss_growth": max(peak) - rss0,
        "cpu": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "sim_cpu": (sim_cpu1.user + sim_cpu1.system) - (sim_cpu0.user + sim_cpu0.system),
        "polls": by_route.get("GET job", 0),
        "requests": after["requests"] - before["requests"],
        "logins": after["logins"] - before["logins"],
        "logouts": after["logouts"] - before["logouts"],
    }


def worker(args: argparse.Namespace) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536) if hard > 0 else soft, hard))
    print(json.dumps(asyncio.run(_scenario(args))))
    return 0


# ---- the driver ---------------------------------------------------------------------------------------
START = {
    "burst": "all N start at once (a triggerer taking on a backlog): each poll round is a burst of N polls",
    "spread": "trigger i starts at i x interval / N (triggers arriving over time): polls are spread evenly",
}


def run_worker(kind: str, start: str, n: int, common: list[str], interval: float, env: dict[str, str]) -> Any:
    cmd = [sys.executable, __file__, "--worker", kind, "--start", start, "--n", str(n), *common]
    timeout = 5 * POLLS * interval + 300
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {start} N={n} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


ROWS = [  # label, value of one result, format
    ("wall time, s", lambda r: r["wall"], "{:.2f}"),
    ("ideal, s (9 waits x interval + start spread)", lambda r: r["ideal"], "{:.2f}"),
    ("wall / ideal", lambda r: r["wall"] / r["ideal"], "{:.3f}"),
    ("event-loop lag p50, ms", lambda r: r["lag_p50"] * 1e3, "{:.2f}"),
    ("event-loop lag p99, ms", lambda r: r["lag_p99"] * 1e3, "{:.1f}"),
    ("event-loop lag max, ms", lambda r: r["lag_max"] * 1e3, "{:.1f}"),
    ("lag max after the first second, ms", lambda r: r["lag_max_steady"] * 1e3, "{:.1f}"),
    ("lag max covered by the loop's own CPU, ms", lambda r: r["lag_max_cpu"] * 1e3, "{:.1f}"),
    ("ticks late by > 100 ms", lambda r: r["lag_over_100ms"], "{:d}"),
    ("longest GC pause, ms (gen-2 runs)", lambda r: r["gc_max"] * 1e3, "{:.1f}"),
    ("CPU in GC, s (% of process CPU)", lambda r: r["gc_cpu"], "{:.2f}"),
    ("objects only GC could free, per request", lambda r: r["gc_freed"] / max(r["requests"], 1), "{:.1f}"),
    ("RSS growth per trigger (peak), KiB", lambda r: r["rss_growth"] / r["n"] / 1024, "{:.1f}"),
    ("CPU per poll, ms", lambda r: r["cpu"] / max(r["polls"], 1) * 1e3, "{:.3f}"),
    ("process CPU, s (% of one core)", lambda r: r["cpu"], "{:.2f}"),
    ("simulator CPU, s (% of one core)", lambda r: r["sim_cpu"], "{:.2f}"),
    ("polls seen by the simulator", lambda r: r["polls"], "{:d}"),
    ("requests (logins / logouts)", lambda r: r["requests"], "{:d}"),
    ("events successful / N", lambda r: r["ok"], "{:d}"),
]


def _cells(label: str, fmt: str, value: Any, r: dict[str, Any]) -> str:
    if "% of one core" in label:
        return f"{fmt.format(value)} ({100 * value / r['wall']:.0f} %)"
    if label.startswith("requests"):
        return f"{value} ({r['logins']} / {r['logouts']})"
    if label.startswith("CPU in GC"):
        return f"{fmt.format(value)} ({100 * value / max(r['cpu'], 1e-9):.0f} %)"
    if label.startswith("longest GC"):
        return f"{fmt.format(value)} ({r['gc_gen2']})"
    if label.startswith("events"):
        return f"{value} / {r['n']}"
    return fmt.format(value)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def report(results: dict[tuple[str, int, str], Any], final: dict[str, Any], interval: float) -> str:
    out = []
    for start, n in sorted({k[:2] for k in results}, key=lambda k: (k[0] != "burst", k[1])):
        ours, theirs = results[(start, n, "ours")], results[(start, n, "theirs")]
        rows = [
            [
                label,
                _cells(label, fmt, get(ours), ours),
                _cells(label, fmt, get(theirs), theirs),
                c.ratio(get(ours), get(theirs)),
            ]
            for label, get, fmt in ROWS
        ]
        out.append(f"### {start} start, N = {n}, poll interval {interval:g} s\n\n{START[start]}.\n")
        out.append(
            c.table(["metric", "ours (BackupJobTrigger)", "theirs (HttpTrigger)", "ours/theirs"], rows)
        )
        if ours["errors"] or theirs["errors"]:
            out.append(f"\nerrors: {ours['errors'] + theirs['errors']}")
        out.append("")
    big = max(k[1] for k in results)
    targets = []
    for start in sorted({k[0] for k in results}):
        ours, theirs = results[(start, big, "ours")], results[(start, big, "theirs")]
        cpu = [r["cpu"] / max(r["polls"], 1) * 1e3 for r in (ours, theirs)]
        rss = [r["rss_growth"] / r["n"] / 1024 for r in (ours, theirs)]
        lag = ours["lag_max"] * 1e3
        targets += [
            [
                f"{start}: loop lag max < 100 ms",
                f"{lag:.1f} ms (HttpTrigger {theirs['lag_max'] * 1e3:.1f})",
                _yes(lag < 100),
            ],
            [
                f"{start}: CPU per poll <= HttpTrigger's",
                f"{cpu[0]:.3f} vs {cpu[1]:.3f} ms",
                _yes(cpu[0] <= cpu[1]),
            ],
            [
                f"{start}: RSS per trigger <= HttpTrigger's",
                f"{rss[0]:.1f} vs {rss[1]:.1f} KiB",
                _yes(rss[0] <= rss[1]),
            ],
            [f"{start}: all events successful", f"{ours['ok']} / {big}", _yes(ours["ok"] == big)],
        ]
    sessions = f"{final['open_sessions']} (logins {final['logins']}, logouts {final['logouts']} in all)"
    targets.append(["simulator: open sessions at the end = 0", sessions, _yes(final["open_sessions"] == 0)])
    out.append(f"### Targets (ours, N = {big})\n")
    out.append(c.table(["target", "measured", "met"], targets))
    return "\n".join(out)


NOTES = (
    "Notes: each scenario runs in a fresh worker process (this script with --worker; one event loop). "
    "Ours shares one session among the loop's triggers (hooks/shared_session.py; with "
    "BACKUPJOB_SHARED_SESSIONS=0 it logs in and out once per trigger, 12 requests per job); theirs reuses "
    "one session made before the run and opens a new aiohttp session (a new TCP connection) per poll, "
    "as HttpTrigger does (10 requests per job). CPU per poll = the worker's user+system CPU over the run "
    "/ the GET-job requests the simulator counted. RSS growth = peak RSS (sampled every 100 ms) minus RSS "
    "before the triggers started, after a warm-up wait. Logs at WARNING (the trigger's per-poll INFO lines "
    "are not rendered). Plain HTTP on loopback: no TLS handshakes. The event-loop lag rows: 'covered by the "
    "loop's own CPU' is the loop thread's CPU time within the latest tick (near the lag: the loop was busy; "
    "far below: the process was not running), GC pauses are timed with gc.callbacks."
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: N=20, 1 s interval")
    p.add_argument("--interval", type=float, default=None, help="poll interval, s (default 5; --quick 1)")
    p.add_argument("--sizes", default=None, help="comma-separated N (default 100,1000; --quick 20)")
    p.add_argument("--start", choices=[*START, "both"], default="both", help="how the N triggers start")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the warm-up, in both workers")
    p.add_argument("--worker", choices=sorted(KINDS), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sim-pid", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        c.isolate_airflow()
        return worker(args)
    c.stop_on_sigterm()
    interval = args.interval or (1.0 if args.quick else 5.0)
    sizes = [int(s) for s in (args.sizes or ("20" if args.quick else "100,1000")).split(",")]
    starts = list(START) if args.start == "both" else [args.start]
    print(c.header("Trigger scale", __doc__.split("\n\n")[0].strip()), flush=True)
    results: dict[tuple[str, int, str], Any] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="backupjob-bench-") as tmp:
        home = c.isolate_airflow()
        with c.simulator_process(Path(tmp), "--session-cap", "5000") as (sim, port):
            from airflow_provider_backupjob.simulator import SimulatorClient

            env = dict(os.environ, BENCH_AIRFLOW_HOME=home)
            env["AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT"] = c.vcenter_conn_json(port)
            env["AIRFLOW_CONN_SIM_HTTP"] = json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}
            )
            common = ["--port", str(port), "--sim-pid", str(sim.pid), "--interval", str(interval)]
            common += ["--gc-freeze"] if args.gc_freeze else []
            for start in starts:
                for n in sizes:
                    for kind in KINDS:
                        t = time.monotonic()
                        results[(start, n, kind)] = run_worker(kind, start, n, common, interval, env)
                        print(f"<!-- {start} {kind} N={n}: {time.monotonic() - t:.0f} s -->", flush=True)
            final = SimulatorClient(f"http://127.0.0.1:{port}").stats()
    print()
    print(report(results, final, interval))
    print(f"\n{NOTES}\n\n{time.monotonic() - began:.0f} s in all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
