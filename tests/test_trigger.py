"""BackupJobTrigger and the sensor in deferrable mode, against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow.sdk.module_loading import import_string

from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor
from airflow_provider_backupjob.simulator import DEFAULT_PASSWORD, READONLY_USER, Simulator
from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger
from airflow_provider_backupjob.waiting import event_outcome
from tests.conftest import Connect


def trigger(job_id: str, **kwargs: Any) -> BackupJobTrigger:
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("deadline", time.time() + 30)
    kwargs.setdefault("max_outage", 2.0)
    return BackupJobTrigger(job_id=job_id, **kwargs)


async def first_event(t: BackupJobTrigger) -> dict[str, Any]:
    async def collect() -> dict[str, Any]:
        async for event in t.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(collect(), timeout=60)


async def assert_no_session_left(sim: Simulator) -> None:
    stats = sim.stats()
    for _ in range(100):  # the triggerer's shared session logs out after a linger of one poll interval
        if not stats["open_sessions"]:
            break
        await asyncio.sleep(0.02)
        stats = sim.stats()
    assert stats["open_sessions"] == 0
    assert stats["logouts"] == stats["logins"] - stats["expired_sessions"]


def test_serialize_round_trip_is_json_and_secret_free() -> None:
    t = BackupJobTrigger(
        job_id="20170717-132629-5318154",
        vcenter_conn_id="vc",
        poll_interval=5,
        deadline=1234.5,
        max_outage=60,
    )
    path, kwargs = t.serialize()
    assert path == "airflow_provider_backupjob.triggers.backup_job.BackupJobTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs == {
        "job_id": "20170717-132629-5318154",
        "vcenter_conn_id": "vc",
        "poll_interval": 5.0,
        "deadline": 1234.5,
        "max_outage": 60.0,
    }
    rebuilt = import_string(path)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert DEFAULT_PASSWORD not in json.dumps(kwargs)


@pytest.mark.asyncio
@pytest.mark.parametrize("api_enabled", [True, False], ids=["api", "rest"])
async def test_success_with_one_session(sim: Simulator, connect: Connect, api_enabled: bool) -> None:
    sim.set_api_enabled(api_enabled)
    job = sim.add_job(none_polls=1, inprogress_polls=3)
    connect()
    event = await first_event(trigger(job))
    assert event["status"] == "terminal" and event["job"]["state"] == "SUCCEEDED"
    assert event_outcome(job, event).xcom_value["id"] == job
    stats = sim.stats()
    assert stats["logins"] == 1 and stats["requests_by_route"]["GET job"] == 5
    await assert_no_session_left(sim)


@pytest.mark.asyncio
async def test_failed_job(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(outcome="FAILED", inprogress_polls=1, messages=["Target unreachable"])
    connect()
    event = await first_event(trigger(job))
    with pytest.raises(AirflowFailException, match="Target unreachable"):
        event_outcome(job, event)
    await assert_no_session_left(sim)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("setup", "kind", "task_error"),
    [
        ("missing", "BackupJobNotFound", AirflowFailException),
        ("password", "VCenterAuthError", AirflowFailException),
        ("privilege", "VCenterAuthError", AirflowFailException),
        ("malformed", "UnexpectedResponseError", AirflowException),
        ("outage", "VCenterUnavailableError", AirflowException),
    ],
)
async def test_error_events(
    sim: Simulator, connect: Connect, setup: str, kind: str, task_error: type[Exception]
) -> None:
    job = sim.add_job(inprogress_polls=3)
    if setup == "missing":
        job = "20990101-000000-1"
    connect(
        **({"password": "bad-pass-77"} if setup == "password" else {}),
        **({"login": READONLY_USER} if setup == "privilege" else {}),
    )
    if setup == "malformed":
        sim.inject("malformed_json", path_contains=f"/job/{job}")
    if setup == "outage":
        sim.inject("http_503_html", path_contains=f"/job/{job}", times=100_000)
    event = await first_event(trigger(job, max_outage=0.3))
    assert event["status"] == "error" and event["error"]["kind"] == kind
    assert "bad-pass-77" not in json.dumps(event)
    with pytest.raises(task_error) as info:
        event_outcome(job, event)
    assert task_error is AirflowFailException or not isinstance(info.value, AirflowFailException)
    if setup == "outage":
        assert "max_outage" in str(info.value) and f"127.0.0.1:{sim.port}" in str(info.value)
    await assert_no_session_left(sim)


@pytest.mark.asyncio
async def test_short_outage_and_expired_session_are_ridden_out(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=3)
    connect()
    sim.inject("drop", path_contains=f"/job/{job}", times=2)
    sim.inject("http_502_html", path_contains=f"/job/{job}", times=2)
    sim.inject("expire_session", path_contains=f"/job/{job}")
    event = await first_event(trigger(job, max_outage=30))
    assert event["job"]["state"] == "SUCCEEDED"
    assert sim.stats()["logins"] == 2
    await assert_no_session_left(sim)


@pytest.mark.asyncio
async def test_deadline_gives_a_timeout_event(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=100_000)
    connect()
    event = await first_event(trigger(job, deadline=time.time() + 0.3))
    assert event["status"] == "timeout"
    with pytest.raises(AirflowSensorTimeout):
        event_outcome(job, event)
    await assert_no_session_left(sim)


@pytest.mark.asyncio
async def test_cancellation_logs_out(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=100_000)
    connect()
    task = asyncio.ensure_future(first_event(trigger(job)))
    for _ in range(500):  # until the trigger has a session and has polled
        if sim.stats()["requests_by_route"].get("GET job", 0) >= 2:
            break
        await asyncio.sleep(0.01)
    assert sim.stats()["open_sessions"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_no_session_left(sim)


def deferrable_sensor(job_id: str, **kwargs: Any) -> BackupJobSensor:
    return BackupJobSensor(
        task_id="wait", job_id=job_id, deferrable=True, poke_interval=0.02, timeout=30, **kwargs
    )


def test_sensor_checks_once_then_defers(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=5)
    connect()
    with pytest.raises(TaskDeferred) as info:
        deferrable_sensor(job).execute({})
    deferred = info.value
    assert isinstance(deferred.trigger, BackupJobTrigger) and deferred.method_name == "execute_complete"
    _, kwargs = deferred.trigger.serialize()
    assert kwargs["job_id"] == job and kwargs["poll_interval"] == 0.02
    assert 0 < kwargs["deadline"] - time.time() <= 30
    stats = sim.stats()
    assert (stats["logins"], stats["requests_by_route"]["GET job"]) == (1, 1)
    asyncio.run(assert_no_session_left(sim))


def test_sensor_does_not_defer_for_a_finished_job(sim: Simulator, connect: Connect) -> None:
    connect()
    done = sim.add_job(inprogress_polls=0)
    assert deferrable_sensor(done).execute({})["state"] == "SUCCEEDED"
    failed = sim.add_job(outcome="FAILED", inprogress_polls=0)
    with pytest.raises(AirflowFailException):
        deferrable_sensor(failed).execute({})
    with pytest.raises(AirflowFailException, match="does not exist"):
        deferrable_sensor("20990101-000000-1").execute({})
    asyncio.run(assert_no_session_left(sim))


JOB = "20170717-132629-5318154"
STATUS = {
    "id": JOB,
    "state": "SUCCEEDED",
    "progress": 100,
    "messages": [],
    "start_time": "2026-01-01T00:00:00+00:00",
    "end_time": "2026-01-01T01:00:00+00:00",
}


def test_execute_complete_success() -> None:
    event = {"status": "terminal", "job_id": JOB, "job": STATUS}
    assert deferrable_sensor(JOB).execute_complete({}, event) == STATUS


@pytest.mark.parametrize(
    ("event", "error", "match"),
    [
        (
            {"status": "terminal", "job_id": JOB, "job": {**STATUS, "state": "FAILED"}},
            AirflowFailException,
            "FAILED",
        ),
        (
            {"status": "terminal", "job_id": JOB, "job": {**STATUS, "state": "INPROGRESS"}},
            AirflowException,
            "unexpected trigger event",
        ),
        (
            {"status": "terminal", "job_id": JOB, "job": {**STATUS, "state": "DONE"}},
            AirflowException,
            "unknown backup job state",
        ),
        (
            {"status": "terminal", "job_id": JOB, "job": {**STATUS, "id": "other"}},
            AirflowException,
            "unexpected answer",
        ),
        ({"status": "terminal", "job_id": JOB}, AirflowException, "unexpected response"),
        ({"status": "timeout", "job_id": JOB, "message": "too slow"}, AirflowSensorTimeout, "too slow"),
        (
            {"status": "error", "job_id": JOB, "error": {"kind": "BackupJobNotFound", "detail": "gone"}},
            AirflowFailException,
            "does not exist",
        ),
        (
            {"status": "error", "job_id": JOB, "error": {"kind": "VCenterAuthError", "detail": "no"}},
            AirflowFailException,
            "no",
        ),
        ({"status": "error", "job_id": JOB, "error": {"kind": "Nonsense"}}, AirflowException, "unexpected"),
        ({"status": "success", "job_id": JOB}, AirflowException, "unexpected trigger event"),
        ({"status": "terminal", "job_id": "other-job", "job": STATUS}, AirflowException, "unexpected"),
        ({}, AirflowException, "unexpected trigger event"),
        (None, AirflowException, "unexpected trigger event"),
        ("SUCCEEDED", AirflowException, "unexpected trigger event"),
    ],
)
def test_execute_complete_fails_closed(event: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        deferrable_sensor(JOB).execute_complete({}, event)


def test_soft_fail_skips_in_deferrable_mode_too() -> None:
    sensor = deferrable_sensor(JOB, soft_fail=True)
    failed = {"status": "terminal", "job_id": JOB, "job": {**STATUS, "state": "FAILED"}}
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": failed}, {})
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": {"status": "timeout", "job_id": JOB}}, {})


@pytest.mark.asyncio
async def test_triggers_of_one_loop_share_a_client_but_not_sessions(
    sim: Simulator, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_backupjob.hooks.backup_job_async import _clients
    from airflow_provider_backupjob.hooks.shared_session import ENV_SWITCH

    monkeypatch.setenv(ENV_SWITCH, "0")  # the path without shared sessions (tests/test_shared_session.py)
    connect()
    jobs = [sim.add_job(inprogress_polls=i % 4) for i in range(40)]  # more than one client's worth
    events = await asyncio.gather(*(first_event(trigger(job)) for job in jobs))
    assert [e["job"]["id"] for e in events] == jobs
    assert all(e["job"]["state"] == "SUCCEEDED" for e in events)
    stats = sim.stats()
    assert stats["logins"] == stats["logouts"] == 40  # one session per trigger
    await assert_no_session_left(sim)
    assert _clients.open_clients() == 0  # the last trigger out closed the shared client
