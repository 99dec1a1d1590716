"""The appliance's per-user session cap: waits never pile sessions up, and a login refused at the cap
fails at once with vCenter's own message and a hint (never retried into a storm).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowRescheduleException

from airflow_provider_backupjob.exceptions import VCenterAuthError
from airflow_provider_backupjob.hooks.backup_job import BackupJobHook
from airflow_provider_backupjob.outcome import event_outcome
from airflow_provider_backupjob.retry import RetryPolicy
from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor
from airflow_provider_backupjob.simulator import ADMIN_USER, DEFAULT_PASSWORD, Simulator
from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger
from tests.helpers import Connect

CAP = 3
FAST = RetryPolicy(attempts=3, max_seconds=5, initial_wait=0.01, max_wait=0.05)
HINT = "session cap"


def sensor(job: str, index: int = 0, **kwargs: Any) -> BackupJobSensor:
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("max_outage", 5)
    return BackupJobSensor(task_id=f"wait_{index}", job_id=job, poke_interval=0.01, **kwargs)


def reschedule_until_done(job: str, index: int = 0, max_pokes: int = 100) -> Any:
    ti = SimpleNamespace(get_first_reschedule_date=lambda context: None)
    for _ in range(max_pokes):
        try:
            return sensor(job, index, mode="reschedule").execute({"ti": ti})
        except AirflowRescheduleException:
            time.sleep(0.01)
    raise AssertionError(f"no verdict after {max_pokes} pokes")


async def trigger_event(job: str) -> dict[str, Any]:
    trigger = BackupJobTrigger(job_id=job, poll_interval=0.01, deadline=time.time() + 60, max_outage=5)
    events = [dict(event.payload) async for event in trigger.run()]
    assert len(events) == 1, events
    return events[0]


def assert_clean(sim: Simulator) -> dict[str, Any]:
    stats = sim.stats()
    assert stats["login_failures"] == 0, stats
    assert stats["open_sessions"] == 0, stats
    assert stats["logouts"] == stats["logins"] - stats["expired_sessions"], stats
    return stats


def occupy(sim: Simulator, count: int) -> list[str]:
    """Sessions opened by other clients of the same user (scripts, the UI), left open."""
    tokens = []
    for _ in range(count):
        r = requests.post(f"{sim.base_url}/api/session", auth=(ADMIN_USER, DEFAULT_PASSWORD), timeout=10)
        assert r.status_code == 201, r.text
        tokens.append(r.json())
    return tokens


def release(sim: Simulator, tokens: list[str]) -> None:
    for token in tokens:
        r = requests.delete(
            f"{sim.base_url}/api/session", headers={"vmware-api-session-id": token}, timeout=10
        )
        assert r.status_code == 204, r.text


# --------------------------------------------------------------------------------------------------
# Waits stay under the cap
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["auto", "rest"])
def test_a_hundred_sensors_in_a_row_never_reach_the_cap(sim: Simulator, connect: Connect, style: str) -> None:
    sim.set_session_cap(CAP)
    connect(api_style=style)
    results = []
    for i in range(100):
        job = sim.add_job(none_polls=i % 2, inprogress_polls=i % 3)
        results.append(sensor(job, i).execute({}))
        assert sim.stats()["open_sessions"] == 0, f"sensor {i} left its session open"
    assert all(r["state"] == "SUCCEEDED" for r in results)
    stats = assert_clean(sim)
    assert stats["logins"] == 100  # one session per task, reused for all its pokes


def test_rescheduled_sensors_log_out_after_every_poke(sim: Simulator, connect: Connect) -> None:
    sim.set_session_cap(1)
    connect()
    for i in range(20):
        job = sim.add_job(inprogress_polls=i % 4)
        assert reschedule_until_done(job, i)["state"] == "SUCCEEDED"
    assert_clean(sim)


def test_triggers_as_many_as_the_cap_at_once_never_reach_it(sim: Simulator, connect: Connect) -> None:
    sim.set_session_cap(CAP)
    connect()

    async def waves() -> list[dict[str, Any]]:
        events = []
        for wave in range(10):
            jobs = [sim.add_job(inprogress_polls=(wave + k) % 4) for k in range(CAP)]
            events += await asyncio.gather(*(trigger_event(job) for job in jobs))
        return events

    events = asyncio.run(waves())
    assert len(events) == 10 * CAP
    assert all(event_outcome(e["job_id"], e).xcom_value["state"] == "SUCCEEDED" for e in events)
    assert_clean(sim)


def test_failing_waits_release_their_sessions_too(sim: Simulator, connect: Connect) -> None:
    """With a cap of 1, a single leaked session would refuse every later login."""
    sim.set_session_cap(1)
    connect(timeout=0.5)
    failures: list[type[BaseException]] = []
    for i in range(8):
        scenario = i % 4
        job = sim.add_job(outcome="FAILED" if scenario == 0 else "SUCCEEDED", inprogress_polls=1)
        if scenario == 1:
            job = f"20990101-000000-{i}"  # no such job
        elif scenario == 2:
            sim.inject("malformed_json", path_contains=job)
        elif scenario == 3:
            sim.inject("http_503_html", path_contains=job, times=50)  # an outage past max_outage
        with pytest.raises(AirflowException) as info:
            sensor(job, i, max_outage=0.1).execute({})
        failures.append(type(info.value))
        assert sim.stats()["open_sessions"] == 0, f"wait {i} ({scenario=}) left its session open"
        sim.clear_faults()
    assert failures.count(AirflowFailException) == 4  # FAILED and missing: no retries
    job = sim.add_job(inprogress_polls=1)
    assert sensor(job).execute({})["state"] == "SUCCEEDED"
    assert_clean(sim)


# --------------------------------------------------------------------------------------------------
# A login refused at the cap
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["api", "rest", "auto"])
def test_hook_refused_at_the_cap_quotes_vcenter_and_hints(
    sim: Simulator, connect: Connect, style: str
) -> None:
    sim.set_session_cap(CAP)
    others = occupy(sim, CAP)
    job = sim.add_job()
    connect(api_style=style)
    with BackupJobHook(retry_policy=FAST) as hook, pytest.raises(VCenterAuthError) as info:
        hook.get_job(job)
    message = str(info.value)
    assert f"User session count is limited to {CAP}" in message
    assert HINT in message and "log in without logging out" in message
    assert info.value.status_code == 503
    assert sim.stats()["login_failures"] == 1  # refused once: not retried like an ordinary 503
    release(sim, others)
    with BackupJobHook(retry_policy=FAST) as hook:
        assert hook.get_job(job).state.value == "INPROGRESS"
    assert sim.stats()["open_sessions"] == 0


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_refused_at_the_cap_fails_at_once_with_vcenters_message(
    sim: Simulator, connect: Connect, mode: str
) -> None:
    sim.set_session_cap(CAP)
    others = occupy(sim, CAP)
    job = sim.add_job()
    connect()
    ti = SimpleNamespace(get_first_reschedule_date=lambda context: None)
    task = sensor(job, mode="reschedule" if mode == "reschedule" else "poke", deferrable=mode == "deferrable")
    with pytest.raises(AirflowFailException) as info:
        task.execute({"ti": ti})
    message = str(info.value)
    assert f"User session count is limited to {CAP}" in message and HINT in message
    assert sim.stats()["login_failures"] == 1
    if mode == "deferrable":  # refused in the triggerer: the same failure when the task resumes
        event = asyncio.run(trigger_event(job))
        assert event["status"] == "error" and event["error"]["kind"] == "VCenterAuthError"
        with pytest.raises(AirflowFailException, match=f"User session count is limited to {CAP}"):
            task.execute_complete({}, event)
        assert sim.stats()["login_failures"] == 2
    release(sim, others)
    assert sim.stats()["open_sessions"] == 0


def test_test_connection_refused_at_the_cap(sim: Simulator, connect: Connect) -> None:
    sim.set_session_cap(0)
    connect()
    ok, message = BackupJobHook().test_connection()
    assert not ok
    assert "User session count is limited to 0" in message and HINT in message
