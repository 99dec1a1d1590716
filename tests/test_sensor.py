"""BackupJobSensor: every row of the outcome table, against the simulator over real sockets."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
)

from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor
from airflow_provider_backupjob.simulator import READONLY_USER, Simulator
from tests.helpers import Connect


def sensor(job_id: str, **kwargs: Any) -> BackupJobSensor:
    kwargs.setdefault("poke_interval", 0.02)
    kwargs.setdefault("timeout", 30)
    kwargs.setdefault("max_outage", 2.0)
    return BackupJobSensor(task_id="wait", job_id=job_id, deferrable=False, **kwargs)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_no_session_left(sim: Simulator) -> None:
    stats = sim.stats()
    assert stats["open_sessions"] == 0
    assert stats["logouts"] == stats["logins"] - stats["expired_sessions"]


@pytest.mark.parametrize("api_enabled", [True, False], ids=["api", "rest"])
def test_succeeded_returns_status_with_one_login_for_the_whole_wait(
    sim: Simulator, connect: Connect, api_enabled: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.set_api_enabled(api_enabled)
    job = sim.add_job(none_polls=1, inprogress_polls=3)
    connect()
    result = sensor(job).execute({})
    assert result["id"] == job and result["state"] == "SUCCEEDED" and result["progress"] == 100
    stats = sim.stats()
    assert stats["logins"] == 1 and stats["requests_by_route"]["GET job"] == 5
    assert_no_session_left(sim)
    err = capsys.readouterr().out
    assert err.count(f"Backup job {job} is NONE, 0% done") == 1
    assert err.count(f"Backup job {job} is INPROGRESS") == 3  # one line a poke, with progress


def test_failed_fails_without_retries_quoting_vcenter(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(outcome="FAILED", inprogress_polls=1, messages=["Disk full on backup target"])
    connect()
    with pytest.raises(AirflowFailException, match="FAILED") as info:
        sensor(job).execute({})
    assert "Disk full on backup target" in str(info.value)
    assert_no_session_left(sim)


@pytest.mark.parametrize("api_enabled", [True, False], ids=["api", "rest"])
def test_missing_job_fails_without_retries(sim: Simulator, connect: Connect, api_enabled: bool) -> None:
    sim.set_api_enabled(api_enabled)
    connect()
    with pytest.raises(AirflowFailException, match="does not exist on vCenter 127.0.0.1"):
        sensor("20990101-000000-1").execute({})
    assert_no_session_left(sim)


def test_job_that_disappears_mid_wait_fails(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=50)
    connect()
    sim.inject("not_found", path_contains=f"/job/{job}")
    with pytest.raises(AirflowFailException, match="does not exist"):
        sensor(job).execute({})
    assert_no_session_left(sim)


@pytest.mark.parametrize(
    ("login", "password", "match"),
    [
        (None, "wrong-password-9", "user name or password"),
        (READONLY_USER, None, "SystemConfiguration.Administrators"),
    ],
)
def test_credentials_and_privilege_fail_without_retries(
    sim: Simulator, connect: Connect, login: str | None, password: str | None, match: str
) -> None:
    job = sim.add_job()
    kwargs = {k: v for k, v in (("login", login), ("password", password)) if v}
    connect(**kwargs)
    with pytest.raises(AirflowFailException, match=match) as info:
        sensor(job).execute({})
    assert "wrong-password-9" not in str(info.value)
    assert_no_session_left(sim)


@pytest.mark.parametrize("fault", ["malformed_json"])
def test_unexpected_response_is_a_retryable_task_failure(
    sim: Simulator, connect: Connect, fault: str
) -> None:
    job = sim.add_job()
    connect()
    sim.inject(fault, path_contains=f"/job/{job}")
    with pytest.raises(AirflowException, match="unexpected response") as info:
        sensor(job).execute({})
    assert not isinstance(info.value, AirflowFailException)  # retries apply
    assert_no_session_left(sim)


def test_unknown_state_is_never_success(
    sim: Simulator, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = sim.add_job(inprogress_polls=0)
    connect()
    real = sim.state.get_job

    def cancelled(job_id: str) -> dict[str, Any]:
        return {**real(job_id), "state": "CANCELLED"}

    monkeypatch.setattr(sim.state, "get_job", cancelled)  # the appliance's state machine, not the socket
    with pytest.raises(AirflowException, match="unknown backup job state 'CANCELLED'") as info:
        sensor(job).execute({})
    assert not isinstance(info.value, AirflowFailException)
    assert_no_session_left(sim)


@pytest.mark.parametrize("kind", ["http_503_html", "http_503_json", "http_502_html", "http_504_html", "drop"])
def test_short_outage_keeps_waiting(sim: Simulator, connect: Connect, kind: str) -> None:
    job = sim.add_job(inprogress_polls=2)
    connect()
    sim.inject(kind, path_contains="/backup/job/", times=6)
    result = sensor(job, max_outage=30).execute({})
    assert result["state"] == "SUCCEEDED"
    assert sim.stats()["faults_injected"] == 6
    assert_no_session_left(sim)


def test_outage_longer_than_max_outage_fails_naming_host_and_last_error(
    sim: Simulator, connect: Connect
) -> None:
    job = sim.add_job(inprogress_polls=2)
    connect()
    sim.inject("http_503_html", path_contains="/backup/job/", times=10_000)
    with pytest.raises(AirflowException, match="longer than max_outage") as info:
        sensor(job, max_outage=0.3).execute({})
    message = str(info.value)
    assert not isinstance(info.value, AirflowFailException)
    assert f"127.0.0.1:{sim.port}" in message and "HTTP 503" in message
    assert_no_session_left(sim)


def test_refused_connections_fail_after_max_outage(sim: Simulator, connect: Connect) -> None:
    port = closed_port()
    connect(port=port)
    with pytest.raises(AirflowException, match="Connection refused") as info:
        sensor("20170717-132629-5318154", max_outage=0.3).execute({})
    assert f"127.0.0.1:{port}" in str(info.value) and "max_outage" in str(info.value)


def test_timeouts_count_as_outage(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=0)
    connect(timeout=0.2)
    sim.inject("slow", path_contains="/backup/job/", delay=0.6, times=2)
    assert sensor(job, max_outage=30).execute({})["state"] == "SUCCEEDED"
    sim.inject("slow", path_contains="/backup/job/", delay=0.6, times=1000)
    with pytest.raises(AirflowException, match="did not answer within 0.2 s"):
        sensor(job, max_outage=0.2).execute({})


def test_expired_session_mid_wait_logs_in_again(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=4)
    connect()
    sim.inject("expire_session", path_contains="/backup/job/")
    assert sensor(job).execute({})["state"] == "SUCCEEDED"
    stats = sim.stats()
    assert stats["logins"] == 2 and stats["expired_sessions"] == 1
    assert_no_session_left(sim)


def test_sensor_timeout_and_soft_fail(sim: Simulator, connect: Connect) -> None:
    connect()
    job = sim.add_job(inprogress_polls=10_000)
    with pytest.raises(AirflowSensorTimeout):
        sensor(job, timeout=0.2).execute({})
    assert_no_session_left(sim)
    with pytest.raises(AirflowSkipException):
        sensor(job, timeout=0.2, soft_fail=True).execute({})
    failed = sim.add_job(outcome="FAILED", inprogress_polls=0)
    with pytest.raises(AirflowSkipException):
        sensor(failed, soft_fail=True).execute({})
    assert_no_session_left(sim)


def test_exponential_backoff_still_polls_until_done(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=2)
    connect()
    result = sensor(job, poke_interval=0.01, exponential_backoff=True, max_wait=timedelta(seconds=0.05))
    assert result.execute({})["state"] == "SUCCEEDED"


class RescheduleTI:
    """What a rescheduled sensor asks of its task instance: when the first try started."""

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def test_reschedule_mode_logs_out_after_every_poke(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(none_polls=1, inprogress_polls=2)
    connect()
    pokes = 0
    result = None
    for _ in range(20):  # Airflow builds a new sensor object for every poke
        pokes += 1
        try:
            result = sensor(job, mode="reschedule").execute({"ti": RescheduleTI()})
            break
        except AirflowRescheduleException:
            assert sim.stats()["open_sessions"] == 0
    assert result is not None and result["state"] == "SUCCEEDED" and pokes == 4
    stats = sim.stats()
    assert stats["logins"] == stats["logouts"] == 4


def test_templated_fields() -> None:
    assert set(BackupJobSensor.template_fields) == {
        "job_id",
        "started_after",
        "started_before",
        "job_type",
        "vcenter_conn_id",
    }


@pytest.mark.parametrize("job_id", ["", "../../session", "a b"])
def test_bad_job_id_fails_without_retries_and_sends_nothing(
    sim: Simulator, connect: Connect, job_id: str
) -> None:
    connect()
    with pytest.raises(AirflowFailException, match="invalid backup job id"):
        sensor(job_id).execute({})
    assert sim.stats()["requests"] == 0


def test_bad_connection_setting_fails_without_retries(sim: Simulator, connect: Connect) -> None:
    connect(api_style="soap")
    with pytest.raises(AirflowFailException, match="api_style must be one of"):
        sensor("20170717-132629-5318154").execute({})
    assert sim.stats()["requests"] == 0


# --------------------------------------------------------------------------------------------------
# Outages against the sensor's timeout, in each mode (the deferrable ones are in test_trigger.py)
# --------------------------------------------------------------------------------------------------
class CountingSensor(BackupJobSensor):
    """Counts its pokes: what Airflow's sensor loop calls, not what goes over the socket."""

    pokes = 0

    def poke(self, context: Any) -> Any:
        self.pokes += 1
        return super().poke(context)


def counting(job_id: str, **kwargs: Any) -> CountingSensor:
    kwargs.setdefault("poke_interval", 0.02)
    return CountingSensor(task_id="wait", job_id=job_id, deferrable=False, **kwargs)


def test_poke_mode_outage_clock_spans_pokes(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=2)
    connect()
    sim.inject("http_503_html", path_contains="/backup/job/", times=100_000)
    s = counting(job, timeout=60, max_outage=0.3)
    with pytest.raises(AirflowException, match=r"longer than max_outage \(0.3 s\)") as info:
        s.execute({})
    assert not isinstance(info.value, (AirflowFailException, AirflowSensorTimeout))
    # no poke sleeps through max_outage: the outage was measured over several pokes of one process
    assert s.pokes >= 2
    assert sim.stats()["requests_by_route"]["GET job"] <= 3 * s.pokes  # one poke: at most 3 attempts
    assert_no_session_left(sim)


def test_poke_mode_outage_that_ends_resets_the_clock(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=3)
    connect()
    sim.inject("drop", path_contains="/backup/job/", times=4)
    assert counting(job, max_outage=30).execute({})["state"] == "SUCCEEDED"
    assert sim.stats()["faults_injected"] == 4
    assert_no_session_left(sim)


class FirstTryTI:
    """A rescheduled sensor's task instance: when its first try started (None before the first)."""

    def __init__(self, first: Any = None) -> None:
        self.first = first

    def get_first_reschedule_date(self, context: Any) -> Any:
        return self.first


def test_reschedule_mode_poke_gives_up_within_its_interval_and_reschedules(
    sim: Simulator, connect: Connect
) -> None:
    """No slot is held through an outage: a poke that cannot reach vCenter reschedules, even with a
    max_outage far longer than the poke; the next poke finds the job."""
    job = sim.add_job(inprogress_polls=0)
    connect()
    sim.inject("http_503_html", path_contains="/backup/job/", times=3)  # one poke's attempts
    with pytest.raises(AirflowRescheduleException):
        sensor(job, mode="reschedule", poke_interval=0.05, max_outage=600).execute({"ti": FirstTryTI()})
    stats = sim.stats()
    assert stats["faults_injected"] == 3 and stats["requests_by_route"]["GET job"] == 3
    assert stats["open_sessions"] == 0
    result = sensor(job, mode="reschedule", max_outage=600).execute({"ti": FirstTryTI()})
    assert result["state"] == "SUCCEEDED"
    assert_no_session_left(sim)


@pytest.mark.parametrize("soft_fail", [False, True])
@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_timeout_comes_before_a_longer_max_outage(
    sim: Simulator, connect: Connect, mode: str, soft_fail: bool
) -> None:
    """The report of issue 11: timeout=15 and max_outage=60 ran 66 s and failed as an outage. In
    reschedule mode the timeout counts from the first try's start (here two minutes ago)."""
    from datetime import datetime, timezone

    job = sim.add_job(inprogress_polls=2)
    connect()
    sim.inject("http_503_html", path_contains="/backup/job/", times=100_000)
    if mode == "poke":
        s, ti = counting(job, timeout=0.4, max_outage=600, soft_fail=soft_fail), FirstTryTI()
    else:
        s = counting(job, mode="reschedule", timeout=60, max_outage=600, soft_fail=soft_fail)
        ti = FirstTryTI(datetime.now(timezone.utc) - timedelta(seconds=120))
    with pytest.raises(AirflowSkipException if soft_fail else AirflowSensorTimeout) as info:
        s.execute({"ti": ti})
    assert "longer than max_outage" not in str(info.value)
    # poke mode kept poking through the outage, each poke "not yet"; a rescheduled try pokes once
    assert s.pokes >= 2 if mode == "poke" else s.pokes == 1
    assert_no_session_left(sim)
