"""StartBackupJobOperator: start, wait, cancel, and keep the secrets, against the simulator."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowTaskTimeout, TaskDeferred
from airflow.sdk.execution_time.timeout import timeout as task_timeout

from airflow_provider_backupjob.operators.backup_job import StartBackupJobOperator, VCenterApplianceLink
from airflow_provider_backupjob.simulator import Simulator
from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger
from tests.helpers import Connect

TARGET_PASSWORD = "target-Secret-41"
BACKUP_PASSWORD = "Backup-Secret-42"


class TaskInstance:
    """What the operator asks of its task instance: XCom pushes and the start date."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}
        self.start_date = None

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BACKUP_TARGET",
        json.dumps(
            {
                "conn_type": "generic",
                "login": "backup-user",
                "password": TARGET_PASSWORD,
                "extra": {"backup_password": BACKUP_PASSWORD},
            }
        ),
    )
    return "backup_target"


def operator(**kwargs: Any) -> StartBackupJobOperator:
    kwargs.setdefault("location", "sftp://backup.example.com/vcsa")
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("deferrable", False)
    return StartBackupJobOperator(task_id="backup", **kwargs)


def assert_no_session_left(sim: Simulator) -> None:
    stats = sim.stats()
    assert stats["open_sessions"] == 0


@pytest.mark.parametrize("api_enabled", [True, False], ids=["api", "rest"])
def test_start_and_wait_in_both_dialects(
    sim: Simulator, connect: Connect, target: str, api_enabled: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.set_api_enabled(api_enabled)
    sim.set_start_script(inprogress_polls=2)
    connect()
    ti = TaskInstance()
    result = operator(location_conn_id=target, comment="nightly").execute({"ti": ti})
    assert result["state"] == "SUCCEEDED" and result["id"] == ti.xcom["job_id"]
    assert ti.xcom[VCenterApplianceLink().xcom_key] == "https://127.0.0.1:5480/"
    (sent,) = sim.stats()["started_requests"]
    assert sent["location_type"] == "SFTP" and sent["parts"] == ["common"] and sent["comment"] == "nightly"
    assert (sent["location_user"], sent["location_password"], sent["backup_password"]) == (
        "backup-user",
        TARGET_PASSWORD,
        BACKUP_PASSWORD,
    )
    dialects = sim.stats()["requests_by_dialect"]
    assert dialects.get("rest" if api_enabled else "api", 0) == (0 if api_enabled else 1)
    out = capsys.readouterr().out
    assert f"Started backup job {result['id']}" in out
    for secret in (TARGET_PASSWORD, BACKUP_PASSWORD):
        assert secret not in out and secret not in json.dumps(ti.xcom) and secret not in json.dumps(result)
    assert_no_session_left(sim)


def test_no_wait_returns_the_started_job(sim: Simulator, connect: Connect) -> None:
    connect()
    ti = TaskInstance()
    result = operator(wait_for_completion=False).execute({"ti": ti})
    assert result["state"] in ("NONE", "INPROGRESS") and ti.xcom["job_id"] == result["id"]
    assert sim.stats()["cancels"] == 0
    assert_no_session_left(sim)


def test_start_refused_while_another_backup_runs_names_it(sim: Simulator, connect: Connect) -> None:
    running = sim.add_job(inprogress_polls=100)
    connect()
    with pytest.raises(AirflowException, match=f"already in progress.*{running}") as info:
        operator().execute({"ti": TaskInstance()})
    assert not isinstance(info.value, AirflowFailException)
    assert sim.stats()["backups_started"] == 0
    assert_no_session_left(sim)


def test_start_whose_answer_is_lost_is_not_sent_again(sim: Simulator, connect: Connect) -> None:
    connect()
    sim.inject("reset_after_read", method="POST", path_contains="/recovery/backup/job")
    with pytest.raises(AirflowException, match="may have started"):
        operator().execute({"ti": TaskInstance()})
    stats = sim.stats()
    assert stats["backups_started"] == 1 and stats["requests_by_route"]["POST job"] == 1
    assert_no_session_left(sim)


def test_start_dropped_without_answer_is_not_sent_again_either(sim: Simulator, connect: Connect) -> None:
    connect()
    # closed before the appliance read it, but the client cannot tell that from a lost answer
    sim.inject("drop", method="POST", path_contains="/recovery/backup/job")
    with pytest.raises(AirflowException, match="may have started"):
        operator().execute({"ti": TaskInstance()})
    assert sim.stats()["backups_started"] == 0
    assert sim.stats()["requests_by_route"].get("POST job", 0) <= 1


def test_wait_timeout_cancels_the_job(
    sim: Simulator, connect: Connect, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.set_start_script(inprogress_polls=100_000)
    connect()
    ti = TaskInstance()
    with pytest.raises(AirflowFailException, match="timed out .* it was cancelled"):
        operator(timeout=timedelta(seconds=0.3)).execute({"ti": ti})
    job = ti.xcom["job_id"]
    assert sim.stats()["cancels"] == 1 and sim.job_state(job) == "FAILED"
    assert f"Cancelling backup job {job}" in capsys.readouterr().out
    assert_no_session_left(sim)


def test_execution_timeout_cancels_the_job(sim: Simulator, connect: Connect) -> None:
    sim.set_start_script(inprogress_polls=100_000)
    connect()
    ti = TaskInstance()
    with pytest.raises(AirflowTaskTimeout), task_timeout(0.5):  # Airflow's own SIGALRM timeout
        operator().execute({"ti": ti})
    assert sim.stats()["cancels"] == 1 and sim.job_state(ti.xcom["job_id"]) == "FAILED"
    assert_no_session_left(sim)


def test_on_kill_cancels_the_job(sim: Simulator, connect: Connect) -> None:
    sim.set_start_script(inprogress_polls=100_000)
    connect()
    op, ti = operator(), TaskInstance()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            op.execute({"ti": ti})
        except BaseException as err:
            outcome.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    for _ in range(500):
        if sim.stats()["requests_by_route"].get("GET job", 0) >= 2:
            break
        time.sleep(0.01)
    op.on_kill()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert sim.stats()["cancels"] == 1 and sim.job_state(ti.xcom["job_id"]) == "FAILED"
    assert outcome and isinstance(outcome[0], AirflowFailException)  # the wait sees the job FAILED


def test_deferrable_wait_and_timeout_event_cancels(sim: Simulator, connect: Connect) -> None:
    sim.set_start_script(inprogress_polls=100_000)
    connect()
    op, ti = operator(deferrable=True, timeout=timedelta(hours=1)), TaskInstance()
    with pytest.raises(TaskDeferred) as info:
        op.execute({"ti": ti})
    trig = info.value.trigger
    assert isinstance(trig, BackupJobTrigger)
    _, kwargs = trig.serialize()
    assert kwargs["job_id"] == ti.xcom["job_id"] and BACKUP_PASSWORD not in json.dumps(kwargs)
    assert_no_session_left(sim)
    later = operator(deferrable=True)  # Airflow resumes on a fresh operator object
    with pytest.raises(AirflowFailException, match="it was cancelled"):
        later.execute_complete({"ti": ti}, {"status": "timeout", "job_id": kwargs["job_id"], "message": "t"})
    assert sim.job_state(kwargs["job_id"]) == "FAILED" and sim.stats()["cancels"] == 1
    done = {
        "status": "terminal",
        "job_id": "x1",
        "job": {
            "id": "x1",
            "state": "SUCCEEDED",
            "progress": 100,
            "messages": [],
            "start_time": "2026-01-01T00:00:00+00:00",
            "end_time": None,
        },
    }
    assert operator(deferrable=True).execute_complete({}, done)["state"] == "SUCCEEDED"
    assert_no_session_left(sim)


def test_secret_arguments_stay_out_of_rendered_fields_and_repr(sim: Simulator, connect: Connect) -> None:
    op = operator(location_user="u", location_password=TARGET_PASSWORD, backup_password=BACKUP_PASSWORD)
    assert not {"location_password", "backup_password"} & set(op.template_fields)
    rendered = {name: getattr(op, name) for name in op.template_fields}
    assert TARGET_PASSWORD not in repr(rendered) and BACKUP_PASSWORD not in repr(rendered)
    request = op.backup_request()
    assert TARGET_PASSWORD not in repr(request) and BACKUP_PASSWORD not in repr(request)
    assert request.location_password == TARGET_PASSWORD


def test_location_type_from_url_and_validation() -> None:
    assert operator(location="nfs://filer/vcsa").backup_request().location_type == "NFS"
    with pytest.raises(ValueError, match="location_type must be one of"):
        operator(location="gopher://x/y").backup_request()
    with pytest.raises(ValueError, match="8 to 20 characters"):
        operator(backup_password="short").backup_request()


@pytest.mark.parametrize(
    ("location", "location_type", "hint"),
    [
        ("backup.example.com/vcsa", None, "'sftp://backup.example.com/vcsa'"),
        ("/srv/backups/vcsa", "NFS", "'nfs://srv/backups/vcsa'"),
        ("filer:/export/vcsa", "SMB", "'smb://filer:/export/vcsa'"),
    ],
)
def test_location_without_a_scheme_fails_fast_with_the_fix(
    sim: Simulator, connect: Connect, location: str, location_type: str | None, hint: str
) -> None:
    connect()
    with pytest.raises(AirflowFailException, match="has no scheme") as info:
        operator(location=location, location_type=location_type).execute({"ti": TaskInstance()})
    assert hint in str(info.value) and "as a URL" in str(info.value)
    assert sim.stats()["requests"] == 0  # nothing sent, not even a login


def test_wait_timeout_comes_before_a_longer_outage_and_cancels(sim: Simulator, connect: Connect) -> None:
    sim.set_start_script(inprogress_polls=100_000)
    connect()
    ti = TaskInstance()
    sim.inject("http_503_html", method="GET", path_contains="/backup/job/", times=100_000)
    with pytest.raises(AirflowFailException, match="while vCenter was unreachable.*it was cancelled"):
        operator(timeout=timedelta(seconds=0.4), max_outage=timedelta(minutes=10)).execute({"ti": ti})
    assert sim.stats()["cancels"] == 1 and sim.job_state(ti.xcom["job_id"]) == "FAILED"
    assert_no_session_left(sim)


def test_outage_longer_than_max_outage_fails_the_wait_with_retries(sim: Simulator, connect: Connect) -> None:
    sim.set_start_script(inprogress_polls=100_000)
    connect()
    sim.inject("http_503_html", method="GET", path_contains="/backup/job/", times=100_000)
    with pytest.raises(AirflowException, match="longer than max_outage") as info:
        operator(max_outage=0.3).execute({"ti": TaskInstance()})
    assert not isinstance(info.value, AirflowFailException)
    assert_no_session_left(sim)


def test_deferred_trigger_owns_the_job_and_waits_to_the_deadline(sim: Simulator, connect: Connect) -> None:
    sim.set_start_script(inprogress_polls=100_000)
    connect()
    ti = TaskInstance()
    with pytest.raises(TaskDeferred) as info:
        operator(deferrable=True, timeout=timedelta(minutes=5)).execute({"ti": ti})
    _, kwargs = info.value.trigger.serialize()
    assert kwargs["cancel_on_kill"] is True and kwargs["job_id"] == ti.xcom["job_id"]
    assert 0 < kwargs["deadline"] - time.time() <= 300
    assert info.value.timeout is not None and info.value.timeout.total_seconds() > 300  # ours first
    assert sim.stats()["cancels"] == 0
    assert_no_session_left(sim)


def test_timeout_event_during_an_outage_cancels_and_says_so(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=100_000)
    connect()
    event = {"status": "timeout", "job_id": job, "message": "timed out ... while vCenter was unreachable"}
    with pytest.raises(AirflowFailException, match="while vCenter was unreachable; it was cancelled"):
        operator(deferrable=True).execute_complete({}, event)
    assert sim.stats()["cancels"] == 1 and sim.job_state(job) == "FAILED"
    assert_no_session_left(sim)
