"""K simulated appliances in one process, for benchmarks/crowd_fleet.py: one asyncio loop, K ports.

``python benchmarks/_sim_fleet.py --count K --port-file F`` binds K `SimServer`s to 127.0.0.1 (each its
own `SimState`, so its own sessions, cap and counters), writes their ports to F as a JSON list, and
samples every appliance's open sessions every 10 ms (the peak is what a crowd of waits held at
once). Commands on stdin, one a line, answered with one JSON line on stdout:

- ``cap N``: every appliance's session cap becomes N;
- ``clean``: every session open on any appliance expires (what an earlier run left open);
- ``reset W``: counters and peaks start again from zero; W is the window, in seconds, of the peak
  job polls (the most GET-job requests in any W seconds, all appliances together);
- ``report``: per appliance: logins, login failures, logouts, GET-job requests, open sessions, peak
  open sessions; and the peak job polls in a window;
- ``stop`` (or end of input): close the servers and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from typing import Any

from airflow_provider_backupjob.simulator.server import SimServer
from airflow_provider_backupjob.simulator.state import SimState


def _open(state: SimState) -> int:
    with state._lock:  # a cheap count (stats() also sweeps and copies), the sampler's only read
        return len(state._sessions)


def _gets(state: SimState) -> int:
    with state._lock:
        return state.by_route.get("GET job", 0)


def _peak_in_window(samples: list[tuple[float, int]], window: float) -> int:
    """The most GET-job requests between two samples at most ``window`` seconds apart."""
    best, start = 0, 0
    for t, gets in samples:
        while samples[start][0] < t - window:
            start += 1
        best = max(best, gets - samples[start][1])
    return best


def _report(states: list[SimState], peaks: list[int]) -> list[dict[str, Any]]:
    out = []
    for state, peak in zip(states, peaks, strict=True):
        s = state.stats()
        out.append(
            {
                "logins": s["logins"],
                "login_failures": s["login_failures"],
                "logouts": s["logouts"],
                "gets": s["requests_by_route"].get("GET job", 0),
                "requests": s["requests"],
                "open": s["open_sessions"],
                "peak": max(peak, s["open_sessions"]),
            }
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--session-cap", type=int, default=5000)
    p.add_argument("--port-file", required=True)
    args = p.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536) if hard > 0 else soft, hard))
    states = [SimState(session_cap=args.session_cap) for _ in range(args.count)]
    servers = [SimServer(state, host="127.0.0.1", port=0) for state in states]
    peaks = [0] * len(states)
    samples: list[tuple[float, int]] = []  # (monotonic time, GET-job requests of all appliances)
    window = [5.0]
    lock, done = threading.Lock(), threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            with lock:
                for i, state in enumerate(states):
                    peaks[i] = max(peaks[i], _open(state))
                samples.append((time.monotonic(), sum(_gets(state) for state in states)))

    def commands() -> None:
        for line in sys.stdin:  # bounded by the driver closing our stdin
            word, _, arg = line.strip().partition(" ")
            with lock:
                if word == "cap":
                    for state in states:
                        state.configure(session_cap=int(arg))
                elif word == "clean":
                    for state in states:
                        state.expire_all_sessions()
                elif word == "reset":
                    for i, state in enumerate(states):
                        state.reset_counters()
                        peaks[i] = _open(state)
                    samples.clear()
                    window[0] = float(arg or 5.0)
                elif word == "report":
                    report = {"appliances": _report(states, peaks)}
                    report["peak_polls"] = _peak_in_window(samples, window[0]) if samples else 0
                    print(json.dumps(report), flush=True)
                    continue
                elif word == "stop":
                    break
            print("{}", flush=True)
        done.set()

    async def serve() -> None:
        for server in servers:
            await server.start()
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="ascii") as fh:
            json.dump([s.port for s in servers], fh)
        os.replace(tmp, args.port_file)
        threading.Thread(target=sample, daemon=True).start()
        threading.Thread(target=commands, daemon=True).start()
        try:
            while not done.is_set():  # bounded by `stop`, end of input or SIGTERM
                await asyncio.sleep(0.1)
        finally:
            for server in servers:
                await server.close()

    started = time.monotonic()
    asyncio.run(serve())
    print(f"{len(servers)} simulators stopped after {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
