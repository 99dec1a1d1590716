"""Job details and find_job in both hooks and both dialects, against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pendulum
import pytest

from airflow_provider_backupjob.exceptions import UnexpectedResponseError, VCenterApiError, VCenterConfigError
from airflow_provider_backupjob.hooks.backup_job import BackupJobHook
from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook
from airflow_provider_backupjob.models import BackupJobDetails, BackupJobState, DetailsStatus, JobType
from airflow_provider_backupjob.protocol import (
    FALLBACK_GETS,
    FIND_MAX_BATCHES,
    Dialect,
    candidate_ids,
    details_request,
    job_id_time,
)
from airflow_provider_backupjob.retry import RetryPolicy
from airflow_provider_backupjob.simulator import SimState, Simulator, SimulatorClient
from airflow_provider_backupjob.simulator.control import CALLS, ControlApi
from tests.conftest import Connect

FAST = RetryPolicy(attempts=3, max_seconds=5, initial_wait=0.01, max_wait=0.05)
HOUR = 3600.0
DIALECTS = pytest.mark.parametrize("api_enabled", [True, False], ids=["api", "rest"])


def hook() -> BackupJobHook:
    return BackupJobHook(retry_policy=FAST)


def ago(seconds: float) -> dt.datetime:
    return pendulum.now("UTC") - dt.timedelta(seconds=seconds)


def requests_of(sim: Simulator) -> dict[str, int]:
    return {k: v for k, v in sim.stats()["requests_by_route"].items() if "session" not in k}


# ---- the models ----------------------------------------------------------------------------------------
INFO: dict[str, Any] = {
    "description": {"id": "d", "default_message": "Backup job", "args": []},
    "service": "com.vmware.appliance.recovery.backup.job",
    "operation": "create",
    "status": "FAILED",
    "cancelable": False,
    "type": "SCHEDULED",
    "location": "sftp://b/vcsa",
    "location_user": "backup",
    "messages": [],
    "start_time": "2026-01-01T22:00:00.000Z",
    "end_time": "2026-01-01T22:05:00.000Z",
    "duration": 300,
    "size": 1024,
    "progress": {"total": 200, "completed": 50, "message": {"id": "p", "default_message": "", "args": []}},
}


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ({"id": "e", "default_message": "disk full", "args": []}, "disk full"),  # real appliances
        ("disk full", "disk full"),  # the generated spec
        (None, None),
    ],
)
def test_details_error_as_object_or_string(error: Any, text: str | None) -> None:
    info = BackupJobDetails.from_json("20260101-220000-1", {**INFO, "error": error})
    assert info.error == text
    status = info.to_status()
    assert status.state is BackupJobState.FAILED
    assert status.progress == 25
    assert status.message_text == (text or "")
    assert status.to_dict()["type"] == "SCHEDULED" and status.to_dict()["duration"] == 300


@pytest.mark.parametrize(
    "change",
    [{"status": "CANCELED"}, {"type": "ON_DEMAND"}, {"status": None}, {"cancelable": "no"}, {"location": 5}],
)
def test_details_fail_closed(change: dict[str, Any]) -> None:
    obj = {k: v for k, v in {**INFO, **change}.items() if v is not None}
    with pytest.raises(UnexpectedResponseError):
        BackupJobDetails.from_json("20260101-220000-1", obj)


def test_blocked_is_still_running_and_job_type_argument_is_checked() -> None:
    assert DetailsStatus.BLOCKED.job_state is BackupJobState.INPROGRESS
    assert JobType.parse("scheduled") is JobType.SCHEDULED
    with pytest.raises(VCenterConfigError, match="SCHEDULED, MANUAL or None"):
        JobType.parse("nightly")


def test_details_filter_is_jobs_on_api_and_filter_jobs_on_rest() -> None:
    ids = ["20260101-220000-1", "20260102-220000-2"]
    assert details_request(Dialect.API, ids).target.endswith(
        "/details?jobs=20260101-220000-1&jobs=20260102-220000-2"
    )
    assert details_request(Dialect.REST, ids).target.endswith(
        "/details?filter.jobs=20260101-220000-1&filter.jobs=20260102-220000-2"
    )
    assert "?" not in details_request(Dialect.API).target


def test_candidate_ids_use_the_time_stamp_with_slack_and_give_up_without_one() -> None:
    after = dt.datetime(2026, 1, 2, 12, tzinfo=dt.timezone.utc)
    ids = ["20260101-000000-1", "20260102-000000-2", "20260102-130000-3", "20260103-120000-4"]
    assert job_id_time(ids[2]) == dt.datetime(2026, 1, 2, 13)
    assert candidate_ids(ids, after, None) == ["20260103-120000-4", "20260102-130000-3", "20260102-000000-2"]
    assert candidate_ids(ids, after, after + dt.timedelta(hours=2)) == [
        "20260102-130000-3",
        "20260102-000000-2",
    ]
    assert candidate_ids([*ids, "job-7"], after, None) is None


# ---- the simulator's details ------------------------------------------------------------------------------
REQUIRED = {
    "location",
    "location_user",
    "type",
    "messages",
    "description",
    "service",
    "operation",
    "status",
    "cancelable",
}


def test_simulator_details_carry_the_vendor_required_fields() -> None:
    state = SimState(seed=1)
    manual = state.add_job(inprogress_polls=0, outcome="FAILED")
    info = state.job_details([manual])[manual]
    assert set(info) >= REQUIRED
    assert info["location"] and isinstance(info["duration"], int) and isinstance(info["size"], int)
    assert set(info["build"]) == {"version", "version_name", "build_number"}
    assert info["type"] == "MANUAL" and info["status"] == "FAILED"
    assert info["error"]["default_message"].startswith("Backup job failed")


def test_simulator_schedule_starts_scheduled_jobs_over_time() -> None:
    now = [1_767_000_000.0]
    state = SimState(seed=1, wallclock=lambda: now[0])
    state.set_schedule(60, outcomes=["SUCCEEDED", "FAILED"], run_seconds=10, first_in=5)
    assert state.list_jobs() == []
    now[0] += 130  # the starts at +5 and +65 have come, +125 too
    jobs = sorted(state.list_jobs())
    assert len(jobs) == 3
    infos = state.job_details(jobs)
    assert [infos[j]["type"] for j in jobs] == ["SCHEDULED"] * 3
    assert [infos[j]["status"] for j in jobs] == ["SUCCEEDED", "FAILED", "RUNNING"]
    assert job_id_time(jobs[0]) == dt.datetime(2025, 12, 29, 9, 20, 5)  # stamped with its start time
    now[0] += 10
    assert state.job_details(jobs[2:])[jobs[2]]["status"] == "SUCCEEDED"
    state.set_schedule(None)
    now[0] += 600
    assert len(state.list_jobs()) == 3


def test_the_control_api_is_declared_once() -> None:
    public = {n for n, f in vars(ControlApi).items() if callable(f) and not n.startswith("_")}
    assert public == set(CALLS) - {"health"}  # every method has its route, every route its method
    for cls in (Simulator, SimulatorClient):
        assert issubclass(cls, ControlApi)
        assert not public & set(vars(cls)), f"{cls.__name__} declares control methods of its own"


def test_every_control_call_answers_alike_in_process_and_over_http(sim: Simulator) -> None:
    client = SimulatorClient(sim.base_url)
    job = sim.add_job(job_type="SCHEDULED", inprogress_polls=0)
    assert client.job_state(job) == sim.job_state(job) == "SUCCEEDED"
    assert client.job_info(job) == sim.job_info(job)
    assert client.job_state("20990101-000000-1") is None is sim.job_state("20990101-000000-1")
    client.set_schedule(60, outcomes=["FAILED"], first_in=3600)
    assert sim.schedule_info() == client.schedule_info() and client.schedule_info()["outcomes"] == ["FAILED"]
    client.set_details_enabled(False)
    assert sim.state.details_enabled is False
    assert client.list_jobs() == sim.list_jobs() == [job]
    assert client.remove_job(job) is True and sim.remove_job(job) is False


# ---- the hooks over sockets -----------------------------------------------------------------------------
@DIALECTS
def test_list_job_details_in_either_dialect(sim: Simulator, connect: Connect, api_enabled: bool) -> None:
    sim.set_api_enabled(api_enabled)
    scheduled = sim.add_job(job_type="SCHEDULED", inprogress_polls=0, started_ago=HOUR)
    manual = sim.add_job(inprogress_polls=3)
    connect()
    with hook() as h:
        every = h.list_job_details()
        one = h.list_job_details([scheduled])
    assert set(every) == {scheduled, manual}
    assert every[scheduled].type is JobType.SCHEDULED and every[manual].type is JobType.MANUAL
    assert every[scheduled].status is DetailsStatus.SUCCEEDED
    assert every[manual].status is DetailsStatus.RUNNING
    assert list(one) == [scheduled]
    assert every[scheduled].location.startswith("sftp://")


@DIALECTS
def test_window_with_no_job_yet_then_one_appears(sim: Simulator, connect: Connect, api_enabled: bool) -> None:
    sim.set_api_enabled(api_enabled)
    sim.add_job(job_type="SCHEDULED", started_ago=2 * HOUR, inprogress_polls=0)  # yesterday's
    connect()
    after = ago(60)
    with hook() as h:
        assert h.find_job(started_after=after, job_type="SCHEDULED") is None
        tonight = sim.add_job(job_type="SCHEDULED", inprogress_polls=2)
        found = h.find_job(started_after=after, job_type="SCHEDULED")
    assert found is not None and found.id == tonight
    assert found.state is BackupJobState.INPROGRESS
    assert found.details is not None and found.to_dict()["type"] == "SCHEDULED"


@DIALECTS
def test_scheduled_versus_manual(sim: Simulator, connect: Connect, api_enabled: bool) -> None:
    sim.set_api_enabled(api_enabled)
    scheduled = sim.add_job(job_type="SCHEDULED", started_ago=600, inprogress_polls=0)
    manual = sim.add_job(started_ago=60, inprogress_polls=0)
    connect()
    after = ago(HOUR)
    with hook() as h:
        by_type = {
            kind: h.find_job(started_after=after, job_type=kind) for kind in ("SCHEDULED", "MANUAL", None)
        }
    assert {k: v.id if v else None for k, v in by_type.items()} == {
        "SCHEDULED": scheduled,
        "MANUAL": manual,
        None: manual,  # the newest of any type
    }


@DIALECTS
def test_failed_job_in_the_window_and_started_before(
    sim: Simulator, connect: Connect, api_enabled: bool
) -> None:
    sim.set_api_enabled(api_enabled)
    failed = sim.add_job(job_type="SCHEDULED", outcome="FAILED", started_ago=600, inprogress_polls=0)
    sim.add_job(job_type="SCHEDULED", started_ago=30, inprogress_polls=0)
    connect()
    with hook() as h:
        found = h.find_job(started_after=ago(HOUR), started_before=ago(300), job_type=JobType.SCHEDULED)
    assert found is not None and found.id == failed
    assert found.state is BackupJobState.FAILED


def test_vcenter_65_without_details_falls_back_to_job_gets(sim: Simulator, connect: Connect) -> None:
    sim.set_api_enabled(False)
    sim.set_details_enabled(False)
    old = sim.add_job(started_ago=2 * HOUR, inprogress_polls=0)
    new = sim.add_job(started_ago=60, inprogress_polls=0)
    connect()
    with hook() as h:
        found = h.find_job(started_after=ago(HOUR))
        assert found is not None and found.id == new and found.details is None
        assert found.state is BackupJobState.SUCCEEDED
        assert h.find_job(started_after=ago(HOUR), started_before=ago(120)) is None
        with pytest.raises(VCenterConfigError, match="cannot be known"):
            h.find_job(started_after=ago(HOUR), job_type="SCHEDULED")
        with pytest.raises(VCenterApiError, match="no backup job details"):
            h.list_job_details()
    assert old not in (found.id,)


@pytest.mark.parametrize("details", [True, False], ids=["details", "vcenter-6.5"])
def test_every_find_job_is_bounded_in_requests_however_many_jobs(
    sim: Simulator, connect: Connect, details: bool
) -> None:
    sim.set_api_enabled(details)
    sim.set_details_enabled(details)
    for i in range(300):  # a job every 10 minutes for two days, all MANUAL
        sim.add_job(job_id=None, started_ago=60 + 600 * i, inprogress_polls=0)
    connect()
    with hook() as h:
        h.list_jobs()  # log in first
        sim.reset_counters()
        kind = "SCHEDULED" if details else None
        found = h.find_job(started_after=ago(2 * 86400), job_type=kind)
    sent = sum(requests_of(sim).values()) - requests_of(sim).get("DELETE session", 0)
    if details:
        assert found is None  # no SCHEDULED job among the newest batches
        assert sent == 1 + FIND_MAX_BATCHES  # the list, then 3 details requests of 20 ids
    else:
        assert found is not None
        assert sent == 3 <= 2 + FALLBACK_GETS  # the list, the 404 on details, the newest job


@pytest.mark.parametrize(
    ("api_enabled", "details"), [(True, True), (False, True), (False, False)], ids=["api", "rest", "6.5"]
)
def test_async_hook_finds_the_job_too(
    sim: Simulator, connect: Connect, api_enabled: bool, details: bool
) -> None:
    sim.set_api_enabled(api_enabled)
    sim.set_details_enabled(details)
    sim.add_job(started_ago=2 * HOUR, inprogress_polls=0)
    newest = sim.add_job(job_type="SCHEDULED", started_ago=60, outcome="FAILED", inprogress_polls=0)
    connect()

    async def go() -> Any:
        async with AsyncBackupJobHook(retry_policy=FAST) as h:
            found = await h.find_job(started_after=ago(HOUR))
            infos = await h.list_job_details([newest]) if details else None
            return found, infos

    found, infos = asyncio.run(go())
    assert found.id == newest and found.state is BackupJobState.FAILED
    if details:
        assert infos[newest].type is JobType.SCHEDULED
    stats = sim.stats()
    assert stats["open_sessions"] == 0


def test_window_arguments_are_checked_before_any_request(sim: Simulator, connect: Connect) -> None:
    connect()
    with hook() as h:
        with pytest.raises(VCenterConfigError, match="time zone"):
            h.find_job(started_after=dt.datetime(2026, 1, 1))
        with pytest.raises(VCenterConfigError, match="later than"):
            h.find_job(started_after=ago(10), started_before=ago(20))
    assert sim.stats()["requests"] == 0
