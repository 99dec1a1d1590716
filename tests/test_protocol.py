"""The sans-IO protocol layer, tested without sockets: exchanges are driven by scripted answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_backupjob.exceptions import (
    BackupAlreadyRunning,
    BackupJobNotFound,
    UnexpectedResponseError,
    VCenterApiError,
    VCenterAuthError,
    VCenterUnavailableError,
)
from airflow_provider_backupjob.models import BackupJobState, BackupRequest
from airflow_provider_backupjob.protocol import (
    Dialect,
    HttpRequest,
    HttpResponse,
    VCenterSession,
    drive,
    error_for,
    is_transient,
    job_path,
    validate_job_id,
)

JOB = "20170717-132629-5318154"
STATUS = {
    "id": JOB,
    "state": "INPROGRESS",
    "progress": 40,
    "messages": [],
    "start_time": "2015-01-01T22:13:05.651Z",
}


def ok(payload: Any, dialect: Dialect = Dialect.API, status: int = 200) -> HttpResponse:
    body = payload if dialect is Dialect.API else {"value": payload}
    return HttpResponse(status, json.dumps(body).encode(), "application/json")


def vapi_error(
    status: int, name: str, msg_id: str, text: str, dialect: Dialect = Dialect.API
) -> HttpResponse:
    message = {"id": msg_id, "default_message": text, "args": []}
    if dialect is Dialect.API:
        body: dict[str, Any] = {"error_type": name.upper(), "messages": [message]}
    else:
        body = {"type": f"com.vmware.vapi.std.errors.{name}", "value": {"messages": [message]}}
    return HttpResponse(status, json.dumps(body).encode(), "application/json")


class Script:
    """A transport that answers from a list and records what was sent."""

    def __init__(self, *answers: HttpResponse) -> None:
        self.answers = list(answers)
        self.sent: list[HttpRequest] = []

    def __call__(self, req: HttpRequest) -> HttpResponse:
        self.sent.append(req)
        assert self.answers, f"unexpected request {req}"
        return self.answers.pop(0)


def session(style: str = "auto") -> VCenterSession:
    return VCenterSession(username="administrator@vsphere.local", password="S3cret-pw!", api_style=style)


@pytest.mark.parametrize("job_id", [JOB, "a", "x" * 128, "job:1.2_3-4", "...a"])
def test_valid_job_ids(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize(
    "job_id", ["", ".", "..", "a/b", "../x", "a b", "a?b", "a%2Fb", "x" * 129, "é", None, 42, "a\nb"]
)
def test_invalid_job_ids_raise_value_error_naming_the_value(job_id: Any) -> None:
    with pytest.raises(ValueError, match="invalid backup job id") as info:
        validate_job_id(job_id)
    assert repr(job_id)[:20] in str(info.value)


def test_bad_job_id_sends_nothing() -> None:
    script = Script()
    with pytest.raises(ValueError, match="invalid backup job id"):
        drive(session().get_job("../../session"), script)
    assert script.sent == []


def test_paths_of_both_dialects() -> None:
    assert job_path(Dialect.API, JOB) == f"/api/appliance/recovery/backup/job/{JOB}"
    assert job_path(Dialect.REST, JOB) == f"/rest/appliance/recovery/backup/job/{JOB}"
    assert job_path(Dialect.REST) == "/rest/appliance/recovery/backup/job"


def test_api_login_then_get_job_with_session_header() -> None:
    s = session()
    script = Script(ok("tok-123", status=201), ok(STATUS))
    status = drive(s.get_job(JOB), script)
    assert status.state is BackupJobState.INPROGRESS and status.progress == 40
    login, get = script.sent
    assert (login.method, login.target) == ("POST", "/api/session")
    assert login.headers["Authorization"].startswith("Basic ")
    assert (get.method, get.target) == ("GET", f"/api/appliance/recovery/backup/job/{JOB}")
    assert get.headers["vmware-api-session-id"] == "tok-123"
    assert s.dialect is Dialect.API and s.logins == 1


def test_auto_falls_back_to_rest_on_404_and_remembers() -> None:
    s = session()
    not_found = HttpResponse(404, b"<html>Not Found</html>", "text/html")
    script = Script(not_found, ok("tok", Dialect.REST), ok(STATUS, Dialect.REST), ok(STATUS, Dialect.REST))
    drive(s.get_job(JOB), script)
    drive(s.get_job(JOB), script)
    assert [r.target for r in script.sent] == [
        "/api/session",
        "/rest/com/vmware/cis/session",
        f"/rest/appliance/recovery/backup/job/{JOB}",
        f"/rest/appliance/recovery/backup/job/{JOB}",
    ]
    assert s.dialect is Dialect.REST


def test_fixed_rest_style_never_tries_api() -> None:
    script = Script(ok("tok", Dialect.REST), ok([JOB], Dialect.REST))
    assert drive(session("rest").list_jobs(), script) == [JOB]
    assert script.sent[0].target == "/rest/com/vmware/cis/session"


def test_expired_session_logs_in_again_once() -> None:
    s = session()
    expired = vapi_error(
        401, "unauthenticated", "com.vmware.vapi.endpoint.method.authentication.required", "x"
    )
    script = Script(ok("t1", status=201), expired, ok("t2", status=201), ok(STATUS))
    drive(s.get_job(JOB), script)
    assert script.sent[-1].headers["vmware-api-session-id"] == "t2"
    assert s.logins == 2

    again = Script(expired, ok("t3", status=201), expired)
    with pytest.raises(VCenterApiError, match="did not accept a fresh session") as info:
        drive(s.get_job(JOB), again)
    assert not isinstance(info.value, VCenterAuthError)  # the login was accepted: worth a task retry
    assert len(again.sent) == 3  # one re-login, never a loop


def test_logout_uses_the_dialect_and_forgets_the_token() -> None:
    s = session("rest")
    drive(s.list_jobs(), Script(ok("tok", Dialect.REST), ok([], Dialect.REST)))
    script = Script(HttpResponse(200))
    assert drive(s.logout(), script) is True
    assert (script.sent[0].method, script.sent[0].target) == ("DELETE", "/rest/com/vmware/cis/session")
    assert not s.is_open
    assert drive(s.logout(), Script()) is False  # nothing open: nothing sent


@pytest.mark.parametrize("dialect", list(Dialect))
def test_404_on_job_is_not_found_in_both_dialects(dialect: Dialect) -> None:
    s = session(dialect.value)
    login = ok("tok", dialect, 201 if dialect is Dialect.API else 200)
    missing = vapi_error(404, "not_found", "com.vmware.api.job.not_found", f"Job {JOB} not found", dialect)
    with pytest.raises(BackupJobNotFound, match=f"job {JOB}") as info:
        drive(s.get_job(JOB), Script(login, missing))
    assert "not found" in str(info.value)


def test_bad_credentials_and_missing_privilege_are_auth_errors() -> None:
    bad = vapi_error(
        401, "unauthenticated", "com.vmware.vapi.endpoint.failedToLogin", "Authentication required."
    )
    with pytest.raises(VCenterAuthError, match="user name or password"):
        drive(session("api").list_jobs(), Script(bad))
    denied = vapi_error(
        403, "unauthorized", "vapi.security.authorization.invalid", "Unable to authorize user"
    )
    with pytest.raises(VCenterAuthError, match="SystemConfiguration.Administrators") as info:
        drive(session("api").list_jobs(), Script(ok("t", status=201), denied))
    assert "Unable to authorize user" in str(info.value)


def test_session_cap_is_an_auth_error_and_not_transient() -> None:
    cap = vapi_error(
        503,
        "service_unavailable",
        "com.vmware.vapi.endpoint.failedToLoginMaxUserSessionCountReached",
        "User session count is limited to 550",
    )
    assert not is_transient(cap)
    with pytest.raises(VCenterAuthError, match="session cap") as info:
        drive(session("api").list_jobs(), Script(cap))
    assert "User session count is limited to 550" in str(info.value)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_with_html_bodies_are_transient(status: int) -> None:
    html = HttpResponse(
        status, b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>", "text/html"
    )
    assert is_transient(html)
    err = error_for(HttpRequest("GET", "/x", "get the backup job", job_id=JOB), html)
    assert isinstance(err, VCenterUnavailableError) and err.status_code == status


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"value": {"id": "', "not JSON"),
        (b"<html>oops</html>", "not JSON"),
        (json.dumps({**STATUS, "state": "CANCELLED"}).encode(), "unknown backup job state"),
        (json.dumps({k: v for k, v in STATUS.items() if k != "progress"}).encode(), "no 'progress'"),
        (json.dumps({**STATUS, "progress": "40"}).encode(), "wrong type"),
        (json.dumps({**STATUS, "progress": True}).encode(), "wrong type"),
        (json.dumps({**STATUS, "start_time": "yesterday"}).encode(), "ISO 8601"),
        (json.dumps([STATUS]).encode(), "not a JSON object"),
    ],
)
def test_malformed_job_bodies_are_unexpected_responses(body: bytes, match: str) -> None:
    with pytest.raises(UnexpectedResponseError, match=match) as info:
        drive(
            session("api").get_job(JOB),
            Script(ok("t", status=201), HttpResponse(200, body, "application/json")),
        )
    assert isinstance(info.value, VCenterApiError)
    assert f"job {JOB}" in str(info.value)


def test_rest_body_without_value_is_unexpected() -> None:
    with pytest.raises(UnexpectedResponseError, match="without 'value'"):
        drive(session("rest").get_job(JOB), Script(ok("t", Dialect.REST), ok(STATUS)))


def test_end_time_absent_null_and_set() -> None:
    for body, expected in [(STATUS, None), ({**STATUS, "end_time": None}, None)]:
        status = drive(session("api").get_job(JOB), Script(ok("t", status=201), ok(body)))
        assert status.end_time is expected
    done = {**STATUS, "state": "SUCCEEDED", "progress": 100, "end_time": "2015-01-01T23:00:00.000Z"}
    status = drive(session("api").get_job(JOB), Script(ok("t", status=201), ok(done)))
    assert status.succeeded and status.end_time is not None and status.end_time.hour == 23
    assert status.to_dict()["end_time"].startswith("2015-01-01T23:00:00")


def test_start_backup_bodies_of_both_dialects_and_not_idempotent() -> None:
    request = BackupRequest(
        parts=["common"], location_type="SFTP", location="sftp://h/b", backup_password="Bpw-12345"
    )
    api = Script(ok("t", status=201), ok(STATUS, status=201))
    drive(session("api").start_backup(request), api)
    assert api.sent[1].json_body["backup_password"] == "Bpw-12345" and not api.sent[1].idempotent
    rest = Script(ok("t", Dialect.REST), ok(STATUS, Dialect.REST))
    drive(session("rest").start_backup(request), rest)
    assert rest.sent[1].json_body["piece"]["location"] == "sftp://h/b"
    assert "Bpw-12345" not in repr(request) and "Bpw-12345" not in repr(rest.sent[1])


def test_feature_in_use_names_the_running_job() -> None:
    in_use = vapi_error(
        400, "feature_in_use", "com.vmware.applmgmt.backup.job.feature_in_use", "A backup is running"
    )
    older = {**STATUS, "id": "20170101-000000-1", "state": "SUCCEEDED", "progress": 100}
    script = Script(ok("t", status=201), in_use, ok(["20170101-000000-1", JOB]), ok(STATUS), ok(older))
    request = BackupRequest(parts=["common"], location_type="NFS", location="nfs://h/b")
    with pytest.raises(BackupAlreadyRunning, match=f"running backup job is {JOB}"):
        drive(session("api").start_backup(request), script)


def test_cancel_paths_of_both_dialects() -> None:
    api = Script(ok("t", status=201), ok({"status": "OK", "messages": []}))
    assert drive(session("api").cancel_job(JOB), api).status == "OK"
    assert api.sent[1].target.endswith(f"/job/{JOB}?action=cancel")
    rest = Script(ok("t", Dialect.REST), ok({"status": "OK", "messages": []}, Dialect.REST))
    drive(session("rest").cancel_job(JOB), rest)
    assert rest.sent[1].target.endswith(f"/job/{JOB}/cancel")


def test_secrets_stay_out_of_reprs_and_errors() -> None:
    s = session()
    script = Script(ok("tok-SECRET-999", status=201), vapi_error(500, "error", "x.y", "boom"))
    with pytest.raises(VCenterApiError) as info:
        drive(s.get_job(JOB), script)
    for text in (repr(s), str(info.value), repr(script.sent[1])):
        assert "tok-SECRET-999" not in text and "S3cret-pw!" not in text
