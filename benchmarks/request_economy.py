"""Request economy: the requests one wait for a backup job sends to the appliance, per sensor mode.

The same job (INPROGRESS, then SUCCEEDED at the K-th GET) is waited for by ``BackupJobSensor`` in
poke, reschedule and deferrable mode against the in-process simulator, which counts every request.

* poke: ``BackupJobSensor(...).execute({})``: one task try, one hook, one session for all K polls.
* reschedule: the real scheduler runs every poke as a new task try with a new operator object, which
  ends with AirflowRescheduleException; emulated by a new ``BackupJobSensor(mode="reschedule")`` per
  poke whose ``execute`` is called with a minimal context (``ti.get_first_reschedule_date`` -> None)
  until it returns. Each poke is a login, a poll and a logout: 3K by design (no session outlives a try).
* deferrable: ``execute({})`` makes one check (login, poll, logout) and raises TaskDeferred; the
  trigger, rebuilt from its serialized kwargs as the triggerer does, then runs with ``async for``
  (one login, its polls, one logout) and ``execute_complete`` takes its event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import _common as c

c.isolate_airflow(log_level="ERROR")  # not the "outside of the Task Runner" warning per poke


class _TaskInstance:
    """The one thing a reschedule-mode sensor asks of its task instance."""

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {
        "requests": after["requests"] - before["requests"],
        "polls": after["requests_by_route"].get("GET job", 0) - before["requests_by_route"].get("GET job", 0),
        "logins": after["logins"] - before["logins"],
        "logouts": after["logouts"] - before["logouts"],
        "open": after["open_sessions"],
    }


def poke(job_id: str, interval: float) -> Any:
    from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor

    sensor = BackupJobSensor(task_id="wait_poke", job_id=job_id, poke_interval=interval, timeout=60)
    return sensor.execute({})


def reschedule(job_id: str, interval: float, k: int) -> Any:
    from airflow_provider_backupjob.compat import AirflowRescheduleException
    from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor

    context = {"ti": _TaskInstance()}
    for _ in range(2 * k + 5):  # bounded: the job ends at the K-th poke
        sensor = BackupJobSensor(
            task_id="wait_reschedule", job_id=job_id, mode="reschedule", poke_interval=interval, timeout=60
        )
        try:
            return sensor.execute(context)
        except AirflowRescheduleException:
            time.sleep(interval)
    raise RuntimeError("reschedule mode did not finish")


def deferrable(job_id: str, interval: float, snapshot: Callable[[], dict[str, Any]]) -> Any:
    from airflow_provider_backupjob.compat import TaskDeferred
    from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor
    from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger

    sensor = BackupJobSensor(
        task_id="wait_deferrable", job_id=job_id, deferrable=True, poke_interval=interval, timeout=60
    )
    try:
        return sensor.execute({}), snapshot()
    except TaskDeferred as deferred:
        after_check = snapshot()
        _, kwargs = deferred.trigger.serialize()
        trigger = BackupJobTrigger(**kwargs)

    async def consume() -> Any:
        payload = None
        async for event in trigger.run():
            payload = event.payload
        return payload

    event = asyncio.run(asyncio.wait_for(consume(), 90))
    return sensor.execute_complete({}, event=event), after_check


def measure(k: int, interval: float) -> list[list[str]]:
    from airflow_provider_backupjob.simulator import Simulator

    rows: list[list[str]] = []
    with Simulator() as sim:
        os.environ["AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT"] = c.vcenter_conn_json(sim.port, timeout=10)

        def new_job() -> str:  # answers INPROGRESS K-1 times, then SUCCEEDED at the K-th GET
            return sim.add_job(outcome="SUCCEEDED", none_polls=0, inprogress_polls=k - 1)

        def row(mode: str, d: dict[str, int], target: str, want: int | None, result: Any) -> None:
            ok = isinstance(result, dict) and result.get("state") == "SUCCEEDED"
            meets = "n/a" if want is None else ("yes" if d["requests"] <= want else "**no**")
            rows.append(
                [
                    mode,
                    *(str(v) for v in (k, d["polls"], d["requests"], d["logins"], d["logouts"], d["open"])),
                    target,
                    meets,
                    "SUCCEEDED" if ok else f"**{result!r:.40}**",
                ]
            )

        before = sim.stats()
        result = poke(new_job(), interval)
        d = _delta(before, sim.stats())
        row("poke", d, f"K+2 = {k + 2}", k + 2, result)

        before = sim.stats()
        result = reschedule(new_job(), interval, k)
        d = _delta(before, sim.stats())
        row("reschedule (emulated)", d, f"expected 3K = {3 * k}", None, result)

        before = sim.stats()
        result, after_check = deferrable(new_job(), interval, sim.stats)
        end = sim.stats()
        check, trig, total = _delta(before, after_check), _delta(after_check, end), _delta(before, end)
        row("deferrable: check before deferring", check, "1 poll + 2 = 3", 3, result)
        row("deferrable: trigger only", trig, f"its polls+2 = {trig['polls'] + 2}", trig["polls"] + 2, result)
        row("deferrable: total", total, f"K+2 = {k + 2}", k + 2, result)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: K=5 only")
    p.add_argument("--interval", type=float, default=0.05, help="poke/poll interval, s (default 0.05)")
    args = p.parse_args()
    c.stop_on_sigterm()
    warnings.simplefilter("ignore")  # e.g. "operator used outside a task runner"
    print(c.header("Request economy", __doc__.split("\n\n")[0].strip()), flush=True)
    rows: list[list[str]] = []
    started = time.monotonic()
    for k in (5,) if args.quick else (5, 20):
        rows += measure(k, args.interval)
    headers = ["mode", "K", "GET job", "requests", "logins", "logouts", "open after"]
    print(c.table([*headers, "target", "meets", "result"], rows))
    print(
        f"\nK = polls the job needs to reach SUCCEEDED (the same job script in every mode); poke interval "
        f"{args.interval:g} s; in-process simulator; {time.monotonic() - started:.1f} s in all.\n"
        "Reschedule mode has no target: the real scheduler makes every poke a new task try with a new "
        "operator, so each poke logs in, polls and logs out (3K). The deferrable total is the check "
        "before deferring (its own login and logout, since no session may outlive the task try) plus "
        "the trigger: K+4 for a job still running at the first check; the trigger alone meets "
        "polls+2."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
