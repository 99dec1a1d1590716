"""Crowd and fleet: N deferred waits in one event loop sharing vCenter sessions and polls, against the
same waits with a session per trigger (before) and against HttpTrigger, in one run.

Appliances are simulators in a helper process (benchmarks/_sim_fleet.py: K servers on 127.0.0.1 ports,
each its own sessions, cap and counters, open sessions sampled every 10 ms). Each (scenario, kind)
runs in a fresh worker process (this script with ``--worker``): it adds the jobs, warms up, then the
driver zeroes the appliances' counters and the worker starts its N triggers. Kinds:

* shared: ``BackupJobTrigger`` as it is now: one session per appliance and one poll per job per
  interval for the whole loop (hooks/shared_session.py, hooks/shared_poll.py);
* unshared: the same trigger with ``BACKUPJOB_SHARED_SESSIONS=0``, the code path before sharing: a
  session and a poll of its own per trigger;
* http: the http provider's ``HttpTrigger`` polling the same URL with one session per appliance made
  before the run, a new HttpTrigger per poll (as in benchmarks/trigger_scale.py).

Every job answers INPROGRESS 9 times, then SUCCEEDED (10 polls, 9 waits): a job shared by N triggers
moves on with every GET, so the unshared crowd on one job ends early.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _common as c

POLLS = 10
KINDS = {
    "shared": "BackupJobTrigger, shared sessions and polls",
    "unshared": "BackupJobTrigger, a session per trigger (before)",
    "http": "HttpTrigger (emulated polling)",
}
START_HELP = {
    "burst": "all N at once",
    "spread": "trigger i starts at i x interval / N",
}


# ---- the worker ---------------------------------------------------------------------------------------
async def _ours(job_id: str, conn_id: str, interval: float, limit: float) -> str:
    from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger

    trigger = BackupJobTrigger(
        job_id=job_id, vcenter_conn_id=conn_id, poll_interval=interval, deadline=time.time() + limit
    )
    async for event in trigger.run():
        payload = event.payload
        if payload.get("status") == "terminal" and payload["job"]["state"] == "SUCCEEDED":
            return "ok"
        detail = str(payload.get("error", {}).get("detail", payload.get("message", "")))
        return "login refused: session cap" if "session cap" in detail else f"{payload['status']}: {detail}"
    return "no event"


async def _http(wait: Any) -> str:
    return "ok" if await wait else "not SUCCEEDED"


async def _scenario(args: argparse.Namespace) -> dict[str, Any]:
    import psutil
    import trigger_scale as ts

    from airflow_provider_backupjob.simulator import SimulatorClient

    ports: list[int] = json.loads(args.ports)
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    sims = [SimulatorClient(url, timeout=60) for url in urls]
    limit = 4 * POLLS * args.interval + 120
    sessions = [ts._login(url) for url in urls] if args.worker == "http" else []

    def one(i: int, job_id: str, interval: float) -> Any:
        a = i % len(ports)
        if args.worker == "http":
            return _http(ts._theirs(job_id, interval, sessions[a], f"http_{a}"))
        return _ours(job_id, f"vc_{a}", interval, limit)

    # warm-up on every appliance: lazy imports, caches, pools and the trigger's code paths exist first
    warm = [sim.add_job(inprogress_polls=1) for sim in sims]
    await asyncio.gather(*(one(a, job, 0.01) for a, job in enumerate(warm)))
    await asyncio.sleep(0.3)  # shared sessions of the warm-up log out after their 0.01 s linger
    if args.jobs == "same":
        job = sims[0].add_job(inprogress_polls=POLLS - 1)
        jobs = [job] * args.n
    else:
        jobs = [sims[i % len(sims)].add_job(inprogress_polls=POLLS - 1) for i in range(args.n)]
    spread = args.interval / args.n if args.start == "spread" else 0.0
    gc.collect()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("the driver did not say go")

    me = psutil.Process()
    rss0, cpu0 = me.memory_info().rss, me.cpu_times()
    peak, lags, stop = [rss0], [], asyncio.Event()

    async def ticker() -> None:
        for i in range(int(limit / 0.01) + 1):  # bounded; ends when the triggers are done
            if stop.is_set():
                return
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)
            if i % 10 == 0:
                peak.append(me.memory_info().rss)

    async def started(i: int, job_id: str) -> str:
        if spread:
            await asyncio.sleep(i * spread)
        return str(await one(i, job_id, args.interval))

    t0 = time.perf_counter()
    tick = asyncio.create_task(ticker())
    results = await asyncio.wait_for(
        asyncio.gather(*(started(i, j) for i, j in enumerate(jobs)), return_exceptions=True), limit
    )
    wall = time.perf_counter() - t0
    cpu1 = me.cpu_times()
    peak.append(me.memory_info().rss)
    stop.set()
    await tick
    for url, session in zip(urls, sessions, strict=False):
        ts._logout(url, session)
    outcomes = [r if isinstance(r, str) else f"raised {r!r}" for r in results]
    return {
        "wall": wall,
        "spread_span": spread * (args.n - 1),
        "ok": outcomes.count("ok"),
        "failed_at_login": outcomes.count("login refused: session cap"),
        "errors": sorted({o for o in outcomes if o != "ok"})[:3],
        "lag_max": max(lags, default=0.0),
        "lag_p99": c.percentile(lags, 99),
        "rss_growth": max(peak) - rss0,
        "cpu": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
    }


def worker(args: argparse.Namespace) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536) if hard > 0 else soft, hard))
    if args.worker == "unshared":
        os.environ["BACKUPJOB_SHARED_SESSIONS"] = "0"
    print(json.dumps(asyncio.run(_scenario(args))), flush=True)
    return 0


# ---- the driver ---------------------------------------------------------------------------------------
class Fleet:
    """The helper process with K appliances; ``ask`` sends one command and reads its JSON answer."""

    def __init__(self, stack: ExitStack, workdir: Path, count: int) -> None:
        port_file = workdir / f"fleet-{count}.ports"
        log = stack.enter_context(open(workdir / f"fleet-{count}.log", "wb"))  # noqa: SIM115
        script = Path(__file__).with_name("_sim_fleet.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--count", str(count), "--port-file", str(port_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        stack.callback(self.close)
        for _ in range(600):  # bounded: 60 s
            if port_file.exists():
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"the simulator fleet exited early ({self.proc.returncode})")
            time.sleep(0.1)
        self.ports: list[int] = json.loads(port_file.read_text())

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.ask("stop")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def run_worker(fleet: Fleet, kind: str, sc: dict[str, Any], interval: float, env: dict[str, str]) -> Any:
    cmd = [sys.executable, __file__, "--worker", kind, "--jobs", sc["jobs"], "--start", sc["start"]]
    cmd += ["--n", str(sc["n"]), "--ports", json.dumps(fleet.ports), "--interval", str(interval)]
    fleet.ask(f"cap {sc['cap']}")
    fleet.ask("clean")  # sessions an earlier run left open (a timed-out logout) count for nobody
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker {kind} did not get ready:\n{proc.communicate(timeout=60)[1][-3000:]}")
        fleet.ask(f"reset {0.99 * interval}")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=5 * POLLS * interval + 300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {sc['name']} failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    answer = fleet.ask("report")
    sims = answer["appliances"]
    result.update(
        peak_polls=answer["peak_polls"],
        n=sc["n"],
        appliances=len(sims),
        gets=sum(s["gets"] for s in sims),
        logins=sum(s["logins"] for s in sims),
        login_failures=sum(s["login_failures"] for s in sims),
        logouts=sum(s["logouts"] for s in sims),
        open_after=sum(s["open"] for s in sims),
        peak_total=sum(s["peak"] for s in sims),
        peak_max=max(s["peak"] for s in sims),
    )
    return result


def scenarios(n: int, appliances: int) -> list[dict[str, Any]]:
    crowd, fleet = {"appliances": 1, "cap": 5000}, {"appliances": appliances, "cap": 5000}
    return [
        {
            **crowd,
            "name": "crowd, one job",
            "jobs": "same",
            "start": "burst",
            "n": n,
            "kinds": ["shared", "unshared"],
        },
        {
            **crowd,
            "name": "crowd, distinct jobs",
            "jobs": "distinct",
            "start": "burst",
            "n": n,
            "kinds": list(KINDS),
        },
        {
            **crowd,
            "name": "crowd, distinct jobs",
            "jobs": "distinct",
            "start": "spread",
            "n": n,
            "kinds": ["shared", "http"],
        },
        {
            **crowd,
            "name": "crowd at the session cap (550)",
            "jobs": "distinct",
            "start": "burst",
            "n": round(n * 0.6),
            "cap": 550,
            "kinds": ["shared", "unshared"],
        },
        {
            **fleet,
            "name": f"fleet of {appliances}",
            "jobs": "distinct",
            "start": "burst",
            "n": n,
            "kinds": list(KINDS),
        },
        {
            **fleet,
            "name": f"fleet of {appliances}",
            "jobs": "distinct",
            "start": "spread",
            "n": n,
            "kinds": ["shared", "http"],
        },
    ]


ROWS: list[tuple[str, Any]] = [
    ("waits successful / N", lambda r: f"{r['ok']} / {r['n']}"),
    ("waits failed at login (session cap)", lambda r: r["failed_at_login"]),
    ("peak open sessions, all appliances", lambda r: r["peak_total"]),
    ("peak open sessions, busiest appliance", lambda r: r["peak_max"]),
    ("logins (refused) / logouts", lambda r: f"{r['logins']} ({r['login_failures']}) / {r['logouts']}"),
    ("sessions open after the run", lambda r: r["open_after"]),
    ("job polls (GET job)", lambda r: r["gets"]),
    ("job polls per interval (peak)", lambda r: r["peak_polls"]),
    ("wall time, s", lambda r: f"{r['wall']:.1f}"),
    ("event-loop lag p99 / max, ms", lambda r: f"{r['lag_p99'] * 1e3:.1f} / {r['lag_max'] * 1e3:.1f}"),
    ("CPU per job poll, ms", lambda r: f"{r['cpu'] / max(r['gets'], 1) * 1e3:.3f}"),
    ("CPU per wait, ms", lambda r: f"{r['cpu'] / r['n'] * 1e3:.2f}"),
    ("RSS growth per trigger (peak), KiB", lambda r: f"{r['rss_growth'] / r['n'] / 1024:.1f}"),
]


def cpu_per_poll(r: dict[str, Any]) -> float:
    return float(r["cpu"]) / max(int(r["gets"]), 1)


def rss_per_trigger(r: dict[str, Any]) -> float:
    return float(r["rss_growth"]) / int(r["n"])


def report(results: dict[tuple[int, str], Any], scs: list[dict[str, Any]], interval: float) -> str:
    out = []
    for i, sc in enumerate(scs):
        kinds = sc["kinds"]
        head = ["metric", *(KINDS[k] for k in kinds)]
        base = "http" if "http" in kinds else "unshared"
        if len(kinds) > 1:
            head.append(f"shared / {base}")
        rows = []
        for label, get in ROWS:
            row = [label, *(get(results[(i, k)]) for k in kinds)]
            if len(kinds) > 1:
                ours, theirs = results[(i, "shared")], results[(i, base)]
                if label.startswith("CPU per job"):
                    row.append(c.ratio(cpu_per_poll(ours), cpu_per_poll(theirs)))
                elif label.startswith("RSS"):
                    row.append(c.ratio(rss_per_trigger(ours), rss_per_trigger(theirs)))
                elif label.startswith("event-loop"):
                    row.append(c.ratio(ours["lag_max"], theirs["lag_max"]))
                else:
                    row.append("")
            rows.append(row)
        out.append(f"### {sc['name']}, {sc['start']} start ({START_HELP[sc['start']]}), N = {sc['n']}, ")
        out[-1] += f"poll interval {interval:g} s\n"
        out.append(c.table(head, rows))
        errors = sorted({e for k in kinds for e in results[(i, k)]["errors"]})
        if errors:
            out.append(f"\nwaits that did not succeed, first kinds: {errors[:4]}")
        out.append("")
    out.append("### Targets (shared)\n")
    out.append(c.table(["target", "measured", "met"], targets(results, scs)))
    return "\n".join(out)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def targets(results: dict[tuple[int, str], Any], scs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for i, sc in enumerate(scs):
        ours = results[(i, "shared")]
        where = f"{sc['name']}, {sc['start']}"
        before = results.get((i, "unshared"))
        was = f" (before: {before['peak_max']})" if before else ""
        rows.append(
            [
                f"{where}: peak sessions per appliance <= 1",
                f"{ours['peak_max']}{was}",
                _yes(ours["peak_max"] <= 1),
            ]
        )
        if sc["cap"] < sc["n"] * 2:
            was = f" (before: {before['failed_at_login']} of {sc['n']})" if before else ""
            rows.append(
                [
                    f"{where}: waits failed at login = 0",
                    f"{ours['failed_at_login']}{was}",
                    _yes(ours["failed_at_login"] == 0),
                ]
            )
        distinct = 1 if sc["jobs"] == "same" else sc["n"]
        was = f" (before: {before['peak_polls']})" if before else ""
        rows.append(
            [
                f"{where}: job polls per interval <= {distinct}",
                f"{ours['peak_polls']}{was}",
                _yes(ours["peak_polls"] <= distinct),
            ]
        )
        rows.append(
            [
                f"{where}: sessions open after the run = 0",
                str(ours["open_after"]),
                _yes(ours["open_after"] == 0),
            ]
        )
        if "http" in sc["kinds"]:
            theirs = results[(i, "http")]
            lag, cpu = ours["lag_max"] * 1e3, [cpu_per_poll(r) * 1e3 for r in (ours, theirs)]
            rss = [rss_per_trigger(r) / 1024 for r in (ours, theirs)]
            rows += [
                [
                    f"{where}: loop lag max < 100 ms",
                    f"{lag:.1f} ms (HttpTrigger {theirs['lag_max'] * 1e3:.1f})",
                    _yes(lag < 100),
                ],
                [
                    f"{where}: CPU per poll <= 0.8x HttpTrigger",
                    f"{cpu[0]:.3f} vs {cpu[1]:.3f} ms ({c.ratio(*cpu)}x)",
                    _yes(cpu[0] <= 0.8 * cpu[1]),
                ],
                [
                    f"{where}: RSS per trigger <= 0.8x HttpTrigger",
                    f"{rss[0]:.1f} vs {rss[1]:.1f} KiB ({c.ratio(*rss)}x)",
                    _yes(rss[0] <= 0.8 * rss[1]),
                ],
            ]
    return rows


NOTES = (
    "Notes: every (scenario, kind) runs in a fresh worker process with one event loop; appliances are "
    "simulators in one helper process (one asyncio loop, one port each), plain HTTP on loopback. Before "
    "each run every session left open on the appliances is expired; counters are zeroed after the worker's "
    "warm-up. Peak open sessions and job polls: sampled every 10 ms in the helper; job polls per interval "
    "= the most GET-job requests in any 0.99 x interval seconds (a trigger polls at most once in that "
    "time). CPU = the worker's user+system CPU over the run; per job poll = / the GET-job requests the "
    "appliances counted (only comparable where every trigger has its own job); per wait = / N. RSS growth "
    "= peak RSS (sampled every 100 ms) minus RSS before the start. HttpTrigger reuses one session per "
    "appliance made before the run and opens a new aiohttp session (a new TCP connection) per poll."
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: N=100 over 10 appliances, 1 s interval")
    p.add_argument("--n", type=int, default=None, help="waits per scenario (default 1000; --quick 100)")
    p.add_argument("--appliances", type=int, default=None, help="fleet size (default 100; --quick 10)")
    p.add_argument("--interval", type=float, default=None, help="poll interval, s (default 5; --quick 1)")
    p.add_argument("--only", default="", help="comma-separated scenario numbers (1-6) to run")
    p.add_argument("--worker", choices=sorted(KINDS), help=argparse.SUPPRESS)
    p.add_argument("--jobs", choices=["same", "distinct"], help=argparse.SUPPRESS)
    p.add_argument("--start", choices=sorted(START_HELP), help=argparse.SUPPRESS)
    p.add_argument("--ports", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        c.isolate_airflow()
        return worker(args)
    c.stop_on_sigterm()
    n = args.n or (100 if args.quick else 1000)
    appliances = args.appliances or (10 if args.quick else 100)
    interval = args.interval or (1.0 if args.quick else 5.0)
    scs = scenarios(n, appliances)
    chosen = {int(x) - 1 for x in args.only.split(",") if x} or set(range(len(scs)))
    scs = [sc for i, sc in enumerate(scs) if i in chosen]
    print(c.header("Crowd and fleet", __doc__.split("\n\n")[0].strip()), flush=True)
    results: dict[tuple[int, str], Any] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="backupjob-bench-") as tmp, ExitStack() as stack:
        home = c.isolate_airflow()
        fleets: dict[int, Fleet] = {}
        for count in sorted({sc["appliances"] for sc in scs}):
            fleets[count] = Fleet(stack, Path(tmp), count)
        env = dict(os.environ, BENCH_AIRFLOW_HOME=home)
        for i, sc in enumerate(scs):
            fleet = fleets[sc["appliances"]]
            for a, port in enumerate(fleet.ports):  # the connections point at this scenario's appliances
                env[f"AIRFLOW_CONN_VC_{a}"] = c.vcenter_conn_json(port)
                env[f"AIRFLOW_CONN_HTTP_{a}"] = json.dumps(
                    {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}
                )
            for kind in sc["kinds"]:
                t = time.monotonic()
                results[(i, kind)] = run_worker(fleet, kind, sc, interval, env)
                print(f"<!-- {sc['name']} {sc['start']} {kind}: {time.monotonic() - t:.0f} s -->", flush=True)
    print()
    print(report(results, scs, interval))
    print(f"\n{NOTES}\n\n{time.monotonic() - began:.0f} s in all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
