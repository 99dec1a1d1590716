"""Shared sessions and shared polls of the triggers in one event loop, against the simulator over sockets.

Every count is the simulator's: logins, login failures, logouts, open sessions, GET-job requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pendulum
import pytest

from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook
from airflow_provider_backupjob.hooks.shared_poll import JobSubscription, _JobPoller, job_pollers
from airflow_provider_backupjob.hooks.shared_session import ENV_SWITCH, SessionKey, shared_sessions
from airflow_provider_backupjob.settings import ConnectionSettings
from airflow_provider_backupjob.simulator import ADMIN_USER, DEFAULT_PASSWORD, Simulator
from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger
from tests.helpers import Connect

POLL = 0.05


def trigger(job_id: str | None, conn_id: str = "vcenter_backup_default", **kwargs: Any) -> BackupJobTrigger:
    kwargs.setdefault("poll_interval", POLL)
    kwargs.setdefault("deadline", time.time() + 60)
    kwargs.setdefault("max_outage", 5.0)
    return BackupJobTrigger(job_id=job_id, vcenter_conn_id=conn_id, **kwargs)


async def event_of(t: BackupJobTrigger) -> dict[str, Any]:
    async for event in t.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


async def run_all(triggers: list[BackupJobTrigger]) -> list[dict[str, Any]]:
    return list(await asyncio.wait_for(asyncio.gather(*(event_of(t) for t in triggers)), timeout=90))


async def until(condition: Any, what: str) -> None:
    for _ in range(1000):  # bounded: 1,000 turns of 10 ms
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def gets(sim: Simulator) -> int:
    return int(sim.stats()["requests_by_route"].get("GET job", 0))


async def all_logged_out(*sims: Simulator) -> dict[str, Any]:
    """Once the linger is over: no session open anywhere, every login matched by a logout."""
    for sim in sims:
        await until(lambda sim=sim: sim.stats()["open_sessions"] == 0, "the shared session logged out")
        stats = sim.stats()
        assert stats["logouts"] == stats["logins"] - stats["expired_sessions"]
    assert not shared_sessions.open_sessions() and not job_pollers.here()
    return stats


@pytest.mark.asyncio
async def test_a_burst_of_a_thousand_triggers_makes_one_login(sim: Simulator, connect: Connect) -> None:
    connect()
    same = sim.add_job(inprogress_polls=2)
    distinct = [sim.add_job(inprogress_polls=1) for _ in range(200)]
    triggers = [trigger(same) for _ in range(800)] + [trigger(job) for job in distinct]
    events = await run_all(triggers)
    assert all(e["status"] == "terminal" and e["job"]["state"] == "SUCCEEDED" for e in events)
    assert [e["job_id"] for e in events] == [same] * 800 + distinct
    stats = sim.stats()
    assert stats["logins"] == 1
    # one poll per interval per job: 3 answers for the shared job, 2 for each other one
    info = sim.job_info(same)
    assert info is not None and info["gets"] == 3
    assert gets(sim) == 3 + 2 * len(distinct)
    await all_logged_out(sim)


@pytest.mark.asyncio
async def test_an_expiry_mid_wait_makes_one_login_again_for_all(sim: Simulator, connect: Connect) -> None:
    connect()
    jobs = [sim.add_job(inprogress_polls=6) for _ in range(50)]
    waits = asyncio.ensure_future(run_all([trigger(job) for job in jobs]))
    await until(lambda: gets(sim) >= 2 * len(jobs), "every trigger polled twice")
    assert sim.expire_all_sessions() == 1  # the one shared session
    events = await waits
    assert all(e["status"] == "terminal" and e["job"]["state"] == "SUCCEEDED" for e in events)
    stats = await all_logged_out(sim)
    assert (stats["logins"], stats["expired_sessions"], stats["logouts"]) == (2, 1, 1)


@pytest.mark.asyncio
async def test_cancelling_one_leaves_the_others_poll_result_and_deadline(
    sim: Simulator, connect: Connect
) -> None:
    connect()
    job = sim.add_job(inprogress_polls=3)
    # an interval far above a loaded loop's lag: a late waiter never needs a poll of its own
    short = trigger(job, poll_interval=10.0, deadline=time.time() + 0.4)  # its own deadline
    others = [trigger(job, poll_interval=0.5) for _ in range(10)]
    doomed = asyncio.ensure_future(event_of(trigger(job, poll_interval=0.5)))
    waits = asyncio.ensure_future(run_all([short, *others]))
    await until(lambda: gets(sim) >= 1, "the first shared poll")
    # the next poll is slow: cancel one trigger while it is in flight
    sim.inject("slow", path_contains=f"/job/{job}", delay=0.3)
    await until(lambda: sim.stats()["pending_faults"] == 0, "the slow poll began")
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    events = await waits
    assert events[0]["status"] == "timeout"
    assert all(e["status"] == "terminal" and e["job"]["state"] == "SUCCEEDED" for e in events[1:])
    info = sim.job_info(job)
    assert info is not None and info["gets"] == 4  # the slow poll was not cancelled nor repeated
    await all_logged_out(sim)


@pytest.mark.asyncio
async def test_the_last_one_out_logs_out_after_the_linger(sim: Simulator, connect: Connect) -> None:
    connect()
    first, second = sim.add_job(inprogress_polls=1), sim.add_job(inprogress_polls=1)
    assert (await event_of(trigger(first, poll_interval=0.5)))["status"] == "terminal"
    assert sim.stats()["open_sessions"] == 1  # lingering for one poll interval (0.5 s)
    # a trigger arriving in turn reuses it: no login and logout per trigger
    assert (await event_of(trigger(second, poll_interval=0.5)))["status"] == "terminal"
    assert sim.stats()["logins"] == 1
    stats = await all_logged_out(sim)
    assert (stats["logins"], stats["logouts"]) == (1, 1)


def test_a_loop_ending_mid_logout_still_logs_out(sim: Simulator, connect: Connect) -> None:
    """The linger is over and the logout is in flight when the event loop ends (the triggerer stops):
    ``asyncio.run`` cancels every task once, which cuts that logout short; it is sent again."""
    connect()
    job = sim.add_job(inprogress_polls=1)
    sim.inject("slow", method="DELETE", path_contains="session", delay=60)  # the first logout hangs

    async def main() -> None:
        assert (await event_of(trigger(job, poll_interval=0.01)))["status"] == "terminal"
        await until(lambda: sim.stats()["faults_injected"] == 1, "the logout reached the appliance")
        # returning ends the loop while the shared session's logout waits for its answer

    asyncio.run(main())
    stats = sim.stats()
    assert (stats["logins"], stats["logouts"], stats["open_sessions"]) == (1, 1, 0)


@pytest.mark.asyncio
async def test_a_logout_cut_short_by_a_cancel_is_sent_again(sim: Simulator, connect: Connect) -> None:
    """A hook of its own session (sharing off, or a holder) cancelled while its logout is in flight."""
    connect()
    job = sim.add_job()
    hook = AsyncBackupJobHook()
    await hook.get_job(job)
    sim.inject("slow", method="DELETE", path_contains="session", delay=60)
    closing = asyncio.get_running_loop().create_task(hook.aclose())
    await until(lambda: sim.stats()["faults_injected"] == 1, "the logout reached the appliance")
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing  # the cancellation is not swallowed
    stats = sim.stats()
    assert (stats["logins"], stats["logouts"], stats["open_sessions"]) == (1, 1, 0)


@pytest.mark.asyncio
async def test_a_wrong_password_reaches_every_waiter_as_one_error(sim: Simulator, connect: Connect) -> None:
    connect("vc_bad", password="wrong-pass-31")
    job = sim.add_job(inprogress_polls=1)
    events = await run_all([trigger(job, "vc_bad") for _ in range(100)])
    assert {e["status"] for e in events} == {"error"}
    assert len({str(e["error"]) for e in events}) == 1
    assert events[0]["error"]["kind"] == "VCenterAuthError"
    assert "rejected the user name or password" in events[0]["error"]["detail"]
    stats = sim.stats()
    assert (stats["login_failures"], stats["logins"], stats["open_sessions"]) == (1, 0, 0)


@pytest.mark.asyncio
async def test_different_passwords_never_share_a_session(sim: Simulator, connect: Connect) -> None:
    connect("vc_good")
    connect("vc_bad", password="rotated-away-9")
    job = sim.add_job(inprogress_polls=2)
    events = await run_all([trigger(job, "vc_good" if i % 2 else "vc_bad") for i in range(40)])
    assert [e["status"] for e in events] == ["error", "terminal"] * 20
    stats = await all_logged_out(sim)
    assert (stats["logins"], stats["login_failures"]) == (1, 1)


def test_a_shared_poll_keeps_the_shortest_interval_of_those_still_waiting() -> None:
    poller = _JobPoller(key=None, hook=None)  # type: ignore[arg-type]  # no poll is made here
    subs = [JobSubscription(None, "job", interval) for interval in (5.0, 1.0, 3.0)]  # type: ignore[arg-type]
    for sub in subs:
        poller.add(sub)
    assert poller._shortest == 1.0
    poller.remove(subs[1])
    assert poller._shortest == 3.0
    poller.remove(subs[1])  # leaving twice changes nothing
    assert poller._shortest == 3.0
    poller.remove(subs[2])
    poller.remove(subs[0])
    poller.add(JobSubscription(None, "job", 7.0))  # type: ignore[arg-type]
    assert poller._shortest == 7.0


def test_the_session_key_tells_settings_apart_and_holds_no_password() -> None:
    base = ConnectionSettings("https://vc:443", "vc:443", ADMIN_USER, DEFAULT_PASSWORD)
    key = SessionKey.of(base, True)
    assert key == SessionKey.of(base, True)
    assert DEFAULT_PASSWORD not in repr(key) and DEFAULT_PASSWORD not in str(key.__dict__)
    others = [
        ConnectionSettings("https://vc:443", "vc:443", ADMIN_USER, "rotated"),
        ConnectionSettings("https://vc:8443", "vc:8443", ADMIN_USER, DEFAULT_PASSWORD),
        ConnectionSettings("https://vc2:443", "vc2:443", ADMIN_USER, DEFAULT_PASSWORD),
        ConnectionSettings("https://vc:443", "vc:443", "other@vsphere.local", DEFAULT_PASSWORD),
        ConnectionSettings("https://vc:443", "vc:443", ADMIN_USER, DEFAULT_PASSWORD, api_style="rest"),
    ]
    assert len({key, *(SessionKey.of(s, True) for s in others)}) == 1 + len(others)
    assert SessionKey.of(base, ("/ca.pem", 1, 2)) != SessionKey.of(base, ("/ca.pem", 3, 2))  # renewed bundle


@pytest.mark.asyncio
async def test_two_appliances_get_a_session_each(sim: Simulator, connect: Connect) -> None:
    with Simulator() as other:
        connect("vc_one")
        connect("vc_two", port=other.port)
        jobs = [sim.add_job(inprogress_polls=1), other.add_job(inprogress_polls=1)]
        events = await run_all([trigger(jobs[i % 2], ("vc_one", "vc_two")[i % 2]) for i in range(20)])
        assert all(e["status"] == "terminal" for e in events)
        await all_logged_out(sim, other)
        assert sim.stats()["logins"] == other.stats()["logins"] == 1


@pytest.mark.asyncio
async def test_sharing_off_keeps_a_session_per_trigger(
    sim: Simulator, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SWITCH, "0")
    connect()
    job = sim.add_job(inprogress_polls=1)
    events = await run_all([trigger(job) for _ in range(5)])
    assert all(e["status"] == "terminal" for e in events)
    stats = sim.stats()
    assert (stats["logins"], stats["logouts"], stats["open_sessions"]) == (5, 5, 0)


@pytest.mark.asyncio
async def test_selecting_triggers_find_their_job_on_the_shared_session(
    sim: Simulator, connect: Connect
) -> None:
    """Without a job id a trigger selects each poll (find_job): no shared poll, but the loop's session."""
    connect()
    after = (pendulum.now("UTC") - dt.timedelta(seconds=60)).isoformat()
    tonight = sim.add_job(job_type="SCHEDULED", inprogress_polls=2)
    selecting = [trigger(None, started_after=after, job_type="SCHEDULED") for _ in range(30)]
    events = await run_all([*selecting, trigger(tonight)])
    assert all(e["status"] == "terminal" and e["job_id"] == tonight for e in events)
    assert sim.stats()["logins"] == 1
    await all_logged_out(sim)


@pytest.mark.asyncio
async def test_each_killed_trigger_sends_its_own_cancel_and_the_others_wait_on(
    sim: Simulator, connect: Connect
) -> None:
    """A cancel on kill never goes through the shared poll: each killed operator's trigger sends its
    own, on the shared session; the sensors waiting on the same job see it end as cancelled."""
    connect()
    job = sim.add_job(inprogress_polls=100_000)
    killed = [trigger(job, cancel_on_kill=True) for _ in range(2)]
    tasks = [asyncio.ensure_future(event_of(t)) for t in killed]
    sensors = [asyncio.ensure_future(event_of(trigger(job))) for _ in range(5)]
    await until(lambda: gets(sim) >= 2, "two shared polls")
    for task in tasks:
        task.cancel()
    for t, task in zip(killed, tasks, strict=True):  # Airflow 3.3+: cancel the trigger, then on_kill()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(t.on_kill(), timeout=30)
    assert sim.stats()["cancels"] == 1  # the second one found the job ended: refused, not cached
    events = await asyncio.wait_for(asyncio.gather(*sensors), timeout=60)
    assert all(e["status"] == "terminal" and e["job"]["state"] == "FAILED" for e in events)
    stats = await all_logged_out(sim)
    assert stats["logins"] == 1 and stats["requests_by_route"]["POST cancel"] == 2


@pytest.mark.asyncio
async def test_the_shared_token_is_masked(sim: Simulator, connect: Connect) -> None:
    from tests.compat import redact

    connect()
    job = sim.add_job(inprogress_polls=1)
    assert all(e["status"] == "terminal" for e in await run_all([trigger(job) for _ in range(3)]))
    (token,) = sim.state.issued_tokens
    assert token not in str(redact(f"session {token}"))
    await all_logged_out(sim)
