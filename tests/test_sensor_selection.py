"""BackupJobSensor selecting its job by start window and type, in poke, reschedule and deferrable
mode, against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pendulum
import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    TaskDeferred,
)

from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor
from airflow_provider_backupjob.simulator import Simulator
from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger
from tests.conftest import Connect

HOUR = 3600.0
DIALECTS = pytest.mark.parametrize("api_enabled", [True, False], ids=["api", "rest"])


def ago(seconds: float) -> dt.datetime:
    return pendulum.now("UTC") - dt.timedelta(seconds=seconds)


def sensor(**kwargs: Any) -> BackupJobSensor:
    kwargs.setdefault("poke_interval", 0.02)
    kwargs.setdefault("timeout", 30)
    kwargs.setdefault("deferrable", False)
    return BackupJobSensor(task_id="tonight", **kwargs)


class RescheduleTI:
    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def assert_no_session_left(sim: Simulator) -> None:
    stats = sim.stats()
    assert stats["open_sessions"] == 0
    assert stats["logouts"] == stats["logins"] - stats["expired_sessions"]


def test_exactly_one_of_job_id_and_started_after() -> None:
    with pytest.raises(ValueError, match="exactly one of job_id"):
        BackupJobSensor(task_id="t")
    with pytest.raises(ValueError, match="exactly one of job_id"):
        BackupJobSensor(task_id="t", job_id="20170717-132629-5318154", started_after="2026-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="with started_after"):
        BackupJobSensor(task_id="t", job_id="20170717-132629-5318154", job_type="SCHEDULED")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"started_after": "tonight"}, "ISO 8601"),
        ({"started_after": "2026-01-01T22:00:00"}, "no time zone"),
        ({"started_after": "2026-01-02T00:00:00Z", "started_before": "2026-01-01T00:00:00Z"}, "later than"),
        ({"started_after": "2026-01-01T00:00:00Z", "job_type": "NIGHTLY"}, "SCHEDULED, MANUAL or None"),
    ],
)
def test_bad_window_fails_without_retries_and_sends_nothing(
    sim: Simulator, connect: Connect, kwargs: dict[str, Any], match: str
) -> None:
    connect()
    with pytest.raises(AirflowFailException, match=match):
        sensor(**kwargs).execute({})
    assert sim.stats()["requests"] == 0


@DIALECTS
def test_poke_waits_for_tonights_scheduled_job_then_succeeds(
    sim: Simulator, connect: Connect, api_enabled: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.set_api_enabled(api_enabled)
    sim.add_job(job_type="SCHEDULED", started_ago=2 * HOUR, inprogress_polls=0)  # before the window
    sim.add_job(started_ago=30, inprogress_polls=0)  # a MANUAL one in it
    connect()
    after = ago(HOUR)
    task = sensor(started_after=after.isoformat(), job_type="SCHEDULED")
    waiting = f"no SCHEDULED backup job started after {after.isoformat()} yet"
    for _ in range(3):  # the first pokes: nothing yet
        assert task.poke({}).is_done is False
    tonight = sim.add_job(job_type="SCHEDULED", inprogress_polls=2)
    result = task.execute({})
    assert result["id"] == tonight and result["state"] == "SUCCEEDED"
    assert result["type"] == "SCHEDULED" and result["location"].startswith("sftp://")
    assert isinstance(result["size"], int) and isinstance(result["duration"], int)
    out = capsys.readouterr().out
    assert out.count(waiting) == 3
    assert f"Chose backup job {tonight} (SCHEDULED" in out
    assert_no_session_left(sim)


@DIALECTS
def test_failed_scheduled_job_in_the_window_fails_without_retries(
    sim: Simulator, connect: Connect, api_enabled: bool
) -> None:
    sim.set_api_enabled(api_enabled)
    sim.add_job(job_type="SCHEDULED", outcome="FAILED", inprogress_polls=1, messages=["NFS share is full"])
    connect()
    with pytest.raises(AirflowFailException, match="NFS share is full"):
        sensor(started_after=ago(HOUR), job_type="SCHEDULED").execute({})
    assert_no_session_left(sim)


def test_no_job_within_the_timeout_times_out(sim: Simulator, connect: Connect) -> None:
    connect()
    with pytest.raises(AirflowSensorTimeout):
        sensor(started_after=ago(60), job_type="SCHEDULED", timeout=0.2).execute({})
    assert_no_session_left(sim)


def test_vcenter_65_selects_without_a_type_and_refuses_one(sim: Simulator, connect: Connect) -> None:
    sim.set_api_enabled(False)
    sim.set_details_enabled(False)
    job = sim.add_job(inprogress_polls=1)
    connect()
    result = sensor(started_after=ago(HOUR)).execute({})
    assert result["id"] == job and "type" not in result
    with pytest.raises(AirflowFailException, match="cannot be known"):
        sensor(started_after=ago(HOUR), job_type="SCHEDULED").execute({})
    assert_no_session_left(sim)


def test_reschedule_mode_selects_every_poke_and_logs_out(sim: Simulator, connect: Connect) -> None:
    connect()
    after = ago(60).isoformat()
    result = None
    for poke in range(10):  # Airflow builds a new sensor object for every poke
        if poke == 2:
            sim.add_job(job_type="SCHEDULED", inprogress_polls=1)
        try:
            result = sensor(started_after=after, job_type="SCHEDULED", mode="reschedule").execute(
                {"ti": RescheduleTI()}
            )
            break
        except AirflowRescheduleException:
            assert sim.stats()["open_sessions"] == 0
    assert result is not None and result["state"] == "SUCCEEDED" and poke == 3
    stats = sim.stats()
    assert stats["logins"] == stats["logouts"] == 4


def run_trigger(trigger: BackupJobTrigger) -> dict[str, Any]:
    async def collect() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(collect(), timeout=60))


@DIALECTS
def test_deferrable_mode_the_trigger_selects(sim: Simulator, connect: Connect, api_enabled: bool) -> None:
    sim.set_api_enabled(api_enabled)
    connect()
    after = ago(60)
    task = sensor(started_after=after, job_type="SCHEDULED", deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        task.execute({})
    trigger = info.value.trigger
    assert isinstance(trigger, BackupJobTrigger)
    _path, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs["job_id"] is None and kwargs["job_type"] == "SCHEDULED"
    assert kwargs["started_after"] == after.isoformat() and kwargs["started_before"] is None
    sim.add_job(started_ago=1, inprogress_polls=0)  # MANUAL: not this one
    tonight = sim.add_job(job_type="SCHEDULED", inprogress_polls=2)
    rebuilt = BackupJobTrigger(**kwargs)
    event = run_trigger(rebuilt)
    assert event["status"] == "terminal" and event["job_id"] == tonight
    result = task.execute_complete({}, event)
    assert result["id"] == tonight and result["type"] == "SCHEDULED" and "size" in result
    assert_no_session_left(sim)


def test_deferrable_failed_and_foreign_events_fail_closed(sim: Simulator, connect: Connect) -> None:
    connect()
    task = sensor(started_after=ago(60), job_type="SCHEDULED", deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        task.execute({})
    sim.add_job(job_type="SCHEDULED", outcome="FAILED", inprogress_polls=1)
    _, kwargs = info.value.trigger.serialize()
    event = run_trigger(BackupJobTrigger(**kwargs))
    with pytest.raises(AirflowFailException, match="FAILED"):
        task.execute_complete({}, event)
    old = {**event["job"], "state": "SUCCEEDED", "start_time": ago(2 * HOUR).isoformat()}
    with pytest.raises(AirflowException, match="outside the SCHEDULED backup job"):
        task.execute_complete({}, {**event, "job": old})
    manual = {**event["job"], "state": "SUCCEEDED", "type": "MANUAL"}
    with pytest.raises(AirflowException, match="outside"):
        task.execute_complete({}, {**event, "job": manual})
    assert_no_session_left(sim)


def test_outage_while_selecting_keeps_waiting(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(job_type="SCHEDULED", inprogress_polls=0)
    connect()
    sim.inject("http_503_html", path_contains="/backup/job", times=20)
    task = sensor(started_after=ago(HOUR), job_type="SCHEDULED")
    assert task.poke({}).is_done is False  # nothing chosen yet: wait, within the timeout
    sim.clear_faults()
    assert task.execute({})["id"] == job
    assert_no_session_left(sim)
