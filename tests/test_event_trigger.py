"""BackupJobEventTrigger (an asset watcher) against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from airflow.triggers.base import BaseEventTrigger

from airflow_provider_backupjob.exceptions import VCenterConfigError, VCenterError
from airflow_provider_backupjob.hooks.backup_job import BackupJobHook
from airflow_provider_backupjob.retry import RetryPolicy
from airflow_provider_backupjob.simulator import Simulator
from airflow_provider_backupjob.triggers import backup_job_event
from airflow_provider_backupjob.triggers.backup_job import BackupJobEventTrigger
from airflow_provider_backupjob.triggers.backup_job_event import STATE_KEY, Watermark, watch_step
from tests.compat import import_string
from tests.helpers import Connect

FAST = RetryPolicy(attempts=2, max_seconds=2, initial_wait=0.01, max_wait=0.02)
DIALECTS = pytest.mark.parametrize("api_enabled", [True, False], ids=["api", "rest"])


class Store:
    """Stands in for Airflow 3.3's asset state store (it needs the triggerer's supervisor)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.data.get(key, default)))

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = json.loads(json.dumps(value))


def test_kwargs_are_deterministic_secret_free_primitives() -> None:
    one = BackupJobEventTrigger(vcenter_conn_id="vc", states=("succeeded", "FAILED"), job_type="scheduled")
    two = BackupJobEventTrigger(
        vcenter_conn_id="vc", states=["FAILED", "SUCCEEDED", "FAILED"], job_type="SCHEDULED"
    )
    path, kwargs = one.serialize()
    assert path == "airflow_provider_backupjob.triggers.backup_job_event.BackupJobEventTrigger"
    assert kwargs == {
        "vcenter_conn_id": "vc",
        "states": ["FAILED", "SUCCEEDED"],
        "job_type": "SCHEDULED",
        "poll_interval": 60.0,
    }
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert two.serialize() == (path, kwargs)
    assert BaseEventTrigger.hash(path, kwargs) == BaseEventTrigger.hash(*two.serialize())
    assert import_string(path)(**kwargs).serialize() == (path, kwargs)
    assert isinstance(one, BaseEventTrigger)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"states": ["INPROGRESS"]}, "subset"), ({"states": []}, "subset"), ({"job_type": "x"}, "SCHEDULED")],
)
def test_bad_arguments_fail_at_parse_time(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BackupJobEventTrigger(**kwargs)


# ---- the watermark step, driven synchronously over real sockets ------------------------------------------
@DIALECTS
def test_watch_step_fires_only_for_jobs_that_end_after_the_start(
    sim: Simulator, connect: Connect, api_enabled: bool
) -> None:
    sim.set_api_enabled(api_enabled)
    sim.add_job(inprogress_polls=0, started_ago=600)  # succeeded before the watcher started
    running = sim.add_job(inprogress_polls=2, started_ago=60)  # running at the start
    connect()
    with BackupJobHook(retry_policy=FAST) as h:

        def step(mark: Watermark | None) -> tuple[Watermark, list[str]]:
            new, ended = h.run(lambda s: watch_step(s, mark, need_type=False))
            return new, [s.id for s in ended]

        mark, ended = step(None)
        assert ended == [] and not mark.is_new(running) and mark.open == (running,)
        h.get_job(running)  # the job moves on by polls (reading details is no poll)
        mark, ended = step(mark)
        assert ended == []  # still running
        h.get_job(running)
        h.get_job(running)
        mark, ended = step(mark)
        assert ended == [running]
        assert step(mark)[1] == []  # never twice
        later = [sim.add_job(inprogress_polls=0), sim.add_job(inprogress_polls=0, outcome="FAILED")]
        mark, ended = step(mark)
        assert ended == sorted(later) and mark.open == ()


# ---- the watcher's loop ----------------------------------------------------------------------------
async def watch(
    sim: Simulator,
    trigger: BackupJobEventTrigger,
    script: Callable[[list[dict[str, Any]], Callable[[int], Awaitable[None]]], Awaitable[None]],
) -> list[dict[str, Any]]:
    """Run the watcher while ``script`` acts; ``polls(n)`` waits (bounded) until it polled n more times."""
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(dict(event.payload))

    async def polls(n: int) -> None:
        target = sim.stats()["requests_by_route"].get("GET jobs", 0) + n
        for _ in range(2000):  # bounded: at most 20 s at 10 ms
            if sim.stats()["requests_by_route"].get("GET jobs", 0) >= target:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the watcher did not poll {n} more times")

    task = asyncio.create_task(consume())
    try:
        await polls(1)
        await script(events, polls)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return events


def watcher(**kwargs: Any) -> BackupJobEventTrigger:
    kwargs.setdefault("poll_interval", 0.02)
    return BackupJobEventTrigger(**kwargs)


@pytest.mark.asyncio
@DIALECTS
async def test_one_event_per_newly_succeeded_job_and_none_for_failed_or_old(
    sim: Simulator, connect: Connect, api_enabled: bool
) -> None:
    sim.set_api_enabled(api_enabled)
    old = sim.add_job(job_type="SCHEDULED", inprogress_polls=0, started_ago=600)
    connect()
    added: list[str] = []

    def end(job_id: str) -> None:  # the job's own polls move it on (reading details does not)
        for _ in range(3):
            sim.state.get_job(job_id)

    async def script(events: list[dict[str, Any]], polls: Callable[[int], Awaitable[None]]) -> None:
        await polls(3)
        assert events == []  # the newest job had succeeded already: no event for it
        added.append(sim.add_job(job_type="SCHEDULED", inprogress_polls=2))
        await polls(3)
        assert events == []  # running
        end(added[0])
        await polls(3)
        added.append(sim.add_job(job_type="SCHEDULED", outcome="FAILED", inprogress_polls=1))
        await polls(2)
        end(added[1])
        await polls(3)
        added.append(sim.add_job(job_type="MANUAL", inprogress_polls=0))
        await polls(3)
        added.append(sim.add_job(job_type="SCHEDULED", inprogress_polls=0))
        await polls(4)

    events = await watch(sim, watcher(job_type="SCHEDULED"), script)
    assert [e["id"] for e in events] == [added[0], added[3]]  # not the FAILED, not the MANUAL, not old
    assert old not in {e["id"] for e in events}
    first = events[0]
    assert first["state"] == "SUCCEEDED" and first["type"] == "SCHEDULED"
    assert json.loads(json.dumps(first)) == first and isinstance(first["size"], int)
    assert sim.stats()["open_sessions"] == 0


@pytest.mark.asyncio
async def test_failed_state_can_be_watched_and_65_without_type_works(
    sim: Simulator, connect: Connect
) -> None:
    sim.set_api_enabled(False)
    sim.set_details_enabled(False)
    connect()
    added: list[str] = []

    async def script(events: list[dict[str, Any]], polls: Callable[[int], Awaitable[None]]) -> None:
        added.append(sim.add_job(outcome="FAILED", inprogress_polls=1))
        added.append("")
        await polls(3)
        added[1] = sim.add_job(inprogress_polls=0)
        await polls(3)

    events = await watch(sim, watcher(states=["FAILED"]), script)
    assert [(e["id"], e["state"]) for e in events] == [(added[0], "FAILED")]


@pytest.mark.asyncio
async def test_restart_with_the_state_store_resumes_without_duplicates(
    sim: Simulator, connect: Connect
) -> None:
    connect()
    store = Store()
    first = sim.add_job(inprogress_polls=0)
    fired: list[str] = []

    async def before(events: list[dict[str, Any]], polls: Callable[[int], Awaitable[None]]) -> None:
        fired.append(sim.add_job(inprogress_polls=0))
        await polls(3)

    one = watcher()
    one.asset_state_store = store  # type: ignore[assignment]
    events = await watch(sim, one, before)
    assert [e["id"] for e in events] == fired
    assert fired[0] in store.data[STATE_KEY]["seen"]
    # the triggerer restarts; meanwhile a job ended: the new watcher fires it, and only it
    during = sim.add_job(inprogress_polls=0)

    async def after(events: list[dict[str, Any]], polls: Callable[[int], Awaitable[None]]) -> None:
        await polls(3)

    two = watcher()
    two.asset_state_store = store  # type: ignore[assignment]
    events = await watch(sim, two, after)
    assert [e["id"] for e in events] == [during]
    assert first not in fired and sim.stats()["open_sessions"] == 0


@pytest.mark.asyncio
async def test_outage_is_ridden_out_and_refusals_end_the_watcher(
    sim: Simulator, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect()

    async def script(events: list[dict[str, Any]], polls: Callable[[int], Awaitable[None]]) -> None:
        sim.inject("http_503_html", path_contains="/backup/job", times=6)
        job = sim.add_job(inprogress_polls=0)
        for _ in range(400):  # bounded
            if events:
                break
            await asyncio.sleep(0.01)
        assert [e["id"] for e in events] == [job]

    await watch(sim, watcher(), script)

    monkeypatch.setattr(backup_job_event, "MAX_FAILURES", 3)
    connect(password="wrong-password-1")
    t = watcher()

    async def run_to_end() -> None:
        async for _ in t.run():
            raise AssertionError("no event expected")

    with pytest.raises(VCenterError, match="gave up after 3 refused polls"):
        await asyncio.wait_for(run_to_end(), timeout=30)


@pytest.mark.asyncio
async def test_job_type_on_an_appliance_without_details_ends_the_watcher(
    sim: Simulator, connect: Connect
) -> None:
    sim.set_details_enabled(False)
    sim.add_job(inprogress_polls=0)
    connect()

    async def run_to_end() -> None:
        async for _ in watcher(job_type="SCHEDULED").run():
            raise AssertionError("no event expected")

    # a crowd of watchers on one appliance shares one session (hooks/shared_session.py)
    ends = await asyncio.wait_for(
        asyncio.gather(*(run_to_end() for _ in range(5)), return_exceptions=True), 30
    )
    assert all(isinstance(end, VCenterConfigError) and "cannot be known" in str(end) for end in ends)
    for _ in range(100):  # bounded: the shared session logs out after a linger of one poll interval
        if not sim.stats()["open_sessions"]:
            break
        await asyncio.sleep(0.02)
    stats = sim.stats()
    assert (stats["logins"], stats["logouts"], stats["open_sessions"]) == (1, 1, 0)


def test_watermark_orders_by_time_stamp_and_remembers_jobs_of_the_same_second() -> None:
    a, b = "20260101-220000-9000000", "20260101-220000-1000000"  # one second, suffixes unordered
    mark = Watermark().after([a], [])
    assert not mark.is_new(a) and mark.is_new(b) and mark.is_new("20260101-220001-1")
    assert not mark.is_new("20260101-215959-5")
    later = mark.after([b], [b])
    assert not later.is_new(b) and later.open == (b,)
    assert Watermark.from_json(later.to_json()) == later
    assert Watermark.from_json({"newest": 5}) is None
