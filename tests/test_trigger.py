"""BackupJobTrigger and the sensor in deferrable mode, against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_backupjob.compat import (
    AIRFLOW_V_3_1_PLUS,
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow_provider_backupjob.outcome import event_outcome
from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor
from airflow_provider_backupjob.simulator import DEFAULT_PASSWORD, READONLY_USER, Simulator
from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger
from tests.compat import import_string
from tests.helpers import Connect


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
        "cancel_on_kill": False,
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


# --------------------------------------------------------------------------------------------------
# Outages in deferrable mode: deferring at once, the deadline before max_outage
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["http_503_html", "drop"])
def test_sensor_defers_at_once_when_the_check_before_deferring_meets_an_outage(
    sim: Simulator, connect: Connect, kind: str
) -> None:
    job = sim.add_job(inprogress_polls=1)
    connect()
    sim.inject(kind, path_contains="/backup/job/", times=100_000)
    with pytest.raises(TaskDeferred) as info:
        deferrable_sensor(job, max_outage=600).execute({})
    assert isinstance(info.value.trigger, BackupJobTrigger)
    assert sim.stats()["requests_by_route"]["GET job"] == 1  # one attempt, no retry in the worker
    assert info.value.trigger.serialize()[1]["cancel_on_kill"] is False  # the sensor started no job
    asyncio.run(assert_no_session_left(sim))


def test_sensor_defers_at_once_when_vcenter_refuses_connections(sim: Simulator, connect: Connect) -> None:
    from tests.test_sensor import closed_port

    connect(port=closed_port())
    with pytest.raises(TaskDeferred):
        deferrable_sensor("20170717-132629-5318154", max_outage=600).execute({})


@pytest.mark.asyncio
async def test_deadline_during_an_outage_gives_a_timeout_event(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=2)
    connect()
    sim.inject("http_503_html", path_contains=f"/job/{job}", times=100_000)
    event = await first_event(trigger(job, deadline=time.time() + 0.4, max_outage=600))
    assert event["status"] == "timeout" and "while vCenter was unreachable" in event["message"]
    assert "HTTP 503" in event["message"]
    with pytest.raises(AirflowSensorTimeout):
        event_outcome(job, event)
    with pytest.raises(AirflowSkipException):
        deferrable_sensor(job, soft_fail=True).resume_execution("execute_complete", {"event": event}, {})
    await assert_no_session_left(sim)


# --------------------------------------------------------------------------------------------------
# Triggerer restarts and kills while deferred
# --------------------------------------------------------------------------------------------------
async def start_then_cancel(t: BackupJobTrigger, sim: Simulator) -> None:
    """Run ``t`` until it holds a session and has polled twice, then cancel it as a triggerer does."""
    task = asyncio.ensure_future(first_event(t))
    for _ in range(500):
        if sim.stats()["requests_by_route"].get("GET job", 0) >= 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class TriggerTI:
    """The identity the triggerer gives a trigger (``trigger.task_instance``)."""

    dag_id, task_id, run_id = "vcenter_backup_start_and_wait", "start_backup", "manual__1"

    def __init__(self, map_index: int = -1) -> None:
        self.map_index = map_index


@pytest.fixture
def task_states(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    return before_3_3(monkeypatch)


def before_3_3(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Airflow before 3.3: no on_kill, and the task SDK's state lookup answering from ``STATES``
    (the supervisor's channel to the API server, which no socket of ours can stand in for)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from airflow_provider_backupjob import compat

    calls: list[dict[str, Any]] = []

    def get_task_states(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        answer = STATES["answer"]
        if isinstance(answer, Exception):
            raise answer
        return {TriggerTI.run_id: answer}

    monkeypatch.setattr(compat, "TRIGGER_ON_KILL", False)
    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    return calls


STATES: dict[str, Any] = {}


@pytest.mark.asyncio
@pytest.mark.parametrize("airflow", ["3.3", "3.2"])
async def test_triggerer_restart_resumes_the_same_wait_without_cancelling(
    sim: Simulator, connect: Connect, monkeypatch: pytest.MonkeyPatch, airflow: str
) -> None:
    """Cancelled by a restart (no on_kill on 3.3; still DEFERRED on 3.2), the trigger logs out; rebuilt
    from its kwargs it resumes the wait, which ends as it would have."""
    job = sim.add_job(none_polls=1, inprogress_polls=6)
    connect()
    calls: list[dict[str, Any]] = []
    if airflow == "3.2":
        calls = before_3_3(monkeypatch)
        STATES["answer"] = {TriggerTI.task_id: "deferred"}
    old = trigger(job, cancel_on_kill=True)
    old.task_instance = TriggerTI()  # type: ignore[assignment]
    await start_then_cancel(old, sim)
    assert sim.stats()["open_sessions"] == 0 and sim.stats()["cancels"] == 0
    assert len(calls) == (1 if airflow == "3.2" else 0)
    path, kwargs = old.serialize()
    event = await first_event(import_string(path)(**kwargs))
    assert event["status"] == "terminal" and event["job"]["state"] == "SUCCEEDED"
    assert sim.stats()["cancels"] == 0 and sim.job_state(job) == "SUCCEEDED"
    await assert_no_session_left(sim)


@pytest.mark.asyncio
@pytest.mark.parametrize("cancel_on_kill", [True, False], ids=["operator", "sensor"])
async def test_on_kill_cancels_only_a_job_the_task_started(
    sim: Simulator, connect: Connect, cancel_on_kill: bool
) -> None:
    """Airflow 3.3+: the triggerer cancels the trigger, then awaits on_kill() on a user's action."""
    job = sim.add_job(inprogress_polls=100_000)
    connect()
    t = trigger(job, cancel_on_kill=cancel_on_kill)
    await start_then_cancel(t, sim)
    await asyncio.wait_for(t.on_kill(), timeout=30)
    stats = sim.stats()
    assert stats["cancels"] == (1 if cancel_on_kill else 0)
    assert sim.job_state(job) == ("FAILED" if cancel_on_kill else "INPROGRESS")
    await assert_no_session_left(sim)


@pytest.mark.asyncio
async def test_a_cancel_on_kill_that_gets_no_answer_in_time_is_logged_not_raised(
    sim: Simulator,
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """asyncio's timeout is not the builtin TimeoutError on Python 3.10: it must not escape on_kill."""
    import airflow_provider_backupjob.triggers.backup_job as trigger_module

    monkeypatch.setattr(trigger_module, "CANCEL_TIMEOUT", 0.3)
    job = sim.add_job(inprogress_polls=100_000)
    connect()
    t = trigger(job, cancel_on_kill=True)
    await start_then_cancel(t, sim)
    sim.inject("slow", method="POST", path_contains="cancel", delay=5)
    await asyncio.wait_for(t.on_kill(), timeout=30)  # returns: never raises
    out = capsys.readouterr()  # trigger logs: structlog to stdout on 3.3, the logging module before
    assert f"Could not cancel backup job {job}" in caplog.text + out.out + out.err
    assert sim.job_state(job) == "INPROGRESS"
    await assert_no_session_left(sim)


@pytest.mark.asyncio
async def test_on_kill_after_the_event_cancels_nothing(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=0)
    connect()
    t = trigger(job, cancel_on_kill=True)
    assert (await first_event(t))["status"] == "terminal"
    await t.on_kill()
    assert sim.stats()["cancels"] == 0
    await assert_no_session_left(sim)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("map_index", "answer", "cancels"),
    [
        (-1, {"start_backup": "failed"}, 1),  # marked failed
        (-1, {"start_backup": "success"}, 1),  # marked success
        (-1, {"start_backup": None}, 1),  # cleared
        (-1, {"start_backup": "deferred"}, 0),  # a triggerer restart
        (3, {"start_backup_3": "failed", "start_backup_2": "deferred"}, 1),  # a mapped task's key
        (2, {"start_backup_3": "failed", "start_backup_2": "deferred"}, 0),
        (-1, {}, 0),  # not found
        (-1, RuntimeError("supervisor gone"), 0),  # the triggerer shutting down
    ],
)
async def test_before_3_3_a_kill_is_read_from_the_task_state(
    sim: Simulator,
    connect: Connect,
    task_states: list[dict[str, Any]],
    map_index: int,
    answer: Any,
    cancels: int,
) -> None:
    STATES["answer"] = answer
    job = sim.add_job(inprogress_polls=100_000)
    connect()
    t = trigger(job, cancel_on_kill=True)
    t.task_instance = TriggerTI(map_index)  # type: ignore[assignment]
    await start_then_cancel(t, sim)
    assert sim.stats()["cancels"] == cancels
    assert sim.job_state(job) == ("FAILED" if cancels else "INPROGRESS")
    (call,) = task_states
    assert call["task_ids"] == ["start_backup"] and call["run_ids"] == ["manual__1"]
    # 3.0's lookup has no map_index filter: the key ({task_id}_{map_index}) picks the task instead
    assert call.get("map_index") == (map_index if AIRFLOW_V_3_1_PLUS else None)
    await assert_no_session_left(sim)


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["sensor", "no task instance"])
async def test_before_3_3_no_cancel_without_a_user_kill_of_a_started_job(
    sim: Simulator, connect: Connect, task_states: list[dict[str, Any]], case: str
) -> None:
    STATES["answer"] = {"start_backup": "failed"}
    job = sim.add_job(inprogress_polls=100_000)
    connect()
    t = trigger(job, cancel_on_kill=case != "sensor")
    if case != "no task instance":
        t.task_instance = TriggerTI()  # type: ignore[assignment]
    await start_then_cancel(t, sim)
    assert sim.stats()["cancels"] == 0 and sim.job_state(job) == "INPROGRESS"
    assert task_states == []
    await assert_no_session_left(sim)


@pytest.mark.asyncio
async def test_before_3_3_a_cancel_at_the_deadline_is_the_timeout_not_a_kill(
    task_states: list[dict[str, Any]],
) -> None:
    """Airflow's own trigger timeout moves the task out of DEFERRED too: past the deadline, no cancel."""
    STATES["answer"] = {"start_backup": "scheduled"}
    t = trigger(JOB, cancel_on_kill=True, deadline=time.time() - 1)
    t.task_instance = TriggerTI()  # type: ignore[assignment]
    assert await t._killed_by_user() is False
    assert task_states == []
    t.deadline = time.time() + 60
    assert await t._killed_by_user() is True  # the same state before the deadline: a user's kill


def test_state_key_of_a_mapped_task() -> None:
    from airflow_provider_backupjob.compat import ti_state_key

    assert ti_state_key("start", -1) == "start" and ti_state_key("start", None) == "start"
    assert ti_state_key("start", 0) == "start_0" and ti_state_key("start", 12) == "start_12"
