"""Tests of the bundled vCenter appliance simulator, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from airflow_provider_backupjob.simulator import (
    ADMIN_USER,
    DEFAULT_PASSWORD,
    READONLY_USER,
    Simulator,
    SimulatorClient,
)

ROOT = Path(__file__).resolve().parents[1]
ADMIN = (ADMIN_USER, DEFAULT_PASSWORD)
JOB = "/appliance/recovery/backup/job"
REST_SESSION = "/rest/com/vmware/cis/session"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JOB_ID = re.compile(r"^\d{8}-\d{6}-\d{7}$")
AUTH_MSG = {
    "id": "com.vmware.vapi.endpoint.method.authentication.required",
    "default_message": "Authentication required.",
    "args": [],
}
REQUEST = {"parts": ["common", "seat"], "location_type": "SFTP", "location": "sftp://10.0.0.5/backups/vc01"}
T = 10.0  # timeout for every HTTP call


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as s:
        yield s


def login(sim: Simulator, dialect: str = "api", auth: tuple[str, str] = ADMIN) -> str:
    if dialect == "api":
        r = requests.post(f"{sim.base_url}/api/session", auth=auth, timeout=T)
        assert r.status_code == 201, r.text
        token = r.json()
    else:
        r = requests.post(f"{sim.base_url}{REST_SESSION}", auth=auth, timeout=T)
        assert r.status_code == 200, r.text
        token = r.json()["value"]
    assert isinstance(token, str)
    return token


def hdr(token: str) -> dict[str, str]:
    return {"vmware-api-session-id": token}


def get_job(sim: Simulator, token: str, job_id: str, dialect: str = "api") -> requests.Response:
    return requests.get(f"{sim.base_url}/{dialect}{JOB}/{job_id}", headers=hdr(token), timeout=T)


def job_body(r: requests.Response, dialect: str) -> dict[str, Any]:
    body = r.json()
    result: dict[str, Any] = body["value"] if dialect == "rest" else body
    return result


# ---- sessions ------------------------------------------------------------------------------------------
def test_login_rest_shape_and_cookie(sim: Simulator) -> None:
    r = requests.post(f"{sim.base_url}{REST_SESSION}", auth=ADMIN, timeout=T)
    assert r.status_code == 200
    token = r.json()["value"]
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    assert r.cookies.get("vmware-api-session-id") == token
    r2 = requests.post(
        f"{sim.base_url}{REST_SESSION}", auth=ADMIN, headers={"vmware-use-header-authn": "true"}, timeout=T
    )
    assert r2.status_code == 200
    assert "set-cookie" not in r2.headers
    assert r2.json()["value"] != token


def test_login_api_shape(sim: Simulator) -> None:
    r = requests.post(f"{sim.base_url}/api/session", auth=ADMIN, timeout=T)
    assert r.status_code == 201
    assert isinstance(r.json(), str)
    assert r.headers["content-type"] == "application/json"


def test_session_info_both_dialects_and_cross_dialect_token(sim: Simulator) -> None:
    token = login(sim, "rest")
    r = requests.post(f"{sim.base_url}{REST_SESSION}?~action=get", headers=hdr(token), timeout=T)
    assert r.status_code == 200
    info = r.json()["value"]
    assert info["user"] == ADMIN_USER
    assert ISO_MS.match(info["created_time"])
    assert ISO_MS.match(info["last_accessed_time"])
    r = requests.get(f"{sim.base_url}/api/session", headers=hdr(token), timeout=T)  # /rest token on /api
    assert r.status_code == 200
    assert r.json()["user"] == ADMIN_USER
    api_token = login(sim, "api")
    r = requests.get(f"{sim.base_url}/rest{JOB}", headers=hdr(api_token), timeout=T)
    assert r.status_code == 200
    assert r.json() == {"value": []}


def test_cookie_alone_authenticates(sim: Simulator) -> None:
    with requests.Session() as s:
        assert s.post(f"{sim.base_url}/api/session", auth=ADMIN, timeout=T).status_code == 201
        r = s.get(f"{sim.base_url}/api{JOB}", timeout=T)
        assert r.status_code == 200
        assert r.json() == []


def test_logout_both_dialects_and_counters(sim: Simulator) -> None:
    t1, t2 = login(sim, "rest"), login(sim, "api")
    assert sim.stats()["open_sessions"] == 2
    r = requests.delete(f"{sim.base_url}{REST_SESSION}", headers=hdr(t1), timeout=T)
    assert r.status_code == 200
    assert r.content == b""
    r = requests.delete(f"{sim.base_url}/api/session", headers=hdr(t2), timeout=T)
    assert r.status_code == 204
    assert r.content == b""
    st = sim.stats()
    assert (st["logins"], st["logouts"], st["open_sessions"], st["expired_sessions"]) == (2, 2, 0, 0)
    assert st["requests_by_route"]["POST session"] == 2
    assert st["requests_by_route"]["DELETE session"] == 2
    # a logged-out token is rejected
    assert get_job(sim, t1, "x").status_code == 401
    assert requests.delete(f"{sim.base_url}/api/session", headers=hdr(t2), timeout=T).status_code == 401


def test_unauthenticated_bodies(sim: Simulator) -> None:
    r = requests.get(f"{sim.base_url}/rest{JOB}/some-id", timeout=T)
    assert r.status_code == 401
    assert r.json() == {
        "type": "com.vmware.vapi.std.errors.unauthenticated",
        "value": {"messages": [AUTH_MSG]},
    }
    r = requests.get(f"{sim.base_url}/api{JOB}/some-id", headers=hdr("0" * 32), timeout=T)
    assert r.status_code == 401
    assert r.json() == {
        "error_type": "UNAUTHENTICATED",
        "messages": [AUTH_MSG],
        "challenge": 'Basic realm="com.vmware.vapi"',
    }


@pytest.mark.parametrize("dialect", ["rest", "api"])
def test_bad_credentials(sim: Simulator, dialect: str) -> None:
    path = REST_SESSION if dialect == "rest" else "/api/session"
    r = requests.post(f"{sim.base_url}{path}", auth=(ADMIN_USER, "wrong"), timeout=T)
    assert r.status_code == 401
    r = requests.post(f"{sim.base_url}{path}", timeout=T)
    assert r.status_code == 401
    st = sim.stats()
    assert (st["logins"], st["login_failures"]) == (0, 2)


@pytest.mark.parametrize("dialect", ["rest", "api"])
def test_unprivileged_user_gets_403(sim: Simulator, dialect: str) -> None:
    token = login(sim, dialect, (READONLY_USER, DEFAULT_PASSWORD))
    job_id = sim.add_job()
    r = get_job(sim, token, job_id, dialect)
    assert r.status_code == 403
    body = r.json()
    messages = body["value"]["messages"] if dialect == "rest" else body["messages"]
    assert messages[0]["id"] == "vapi.security.authorization.invalid"
    assert messages[0]["default_message"] == "Unable to authorize user"
    if dialect == "rest":
        assert body["type"] == "com.vmware.vapi.std.errors.unauthorized"
    else:
        assert body["error_type"] == "UNAUTHORIZED"
    assert sim.job_info(job_id)["gets"] == 0  # type: ignore[index]


def test_session_cap() -> None:
    with Simulator(session_cap=3) as sim:
        tokens = [login(sim, "api") for _ in range(3)]
        for path in ("/api/session", REST_SESSION):
            r = requests.post(f"{sim.base_url}{path}", auth=ADMIN, timeout=T)
            assert r.status_code == 503
            body = r.json()
            msgs = body["messages"] if path.startswith("/api") else body["value"]["messages"]
            assert msgs[0]["id"] == "com.vmware.vapi.endpoint.failedToLoginMaxUserSessionCountReached"
            assert msgs[0]["default_message"] == "User session count is limited to 3"
        assert r.json()["type"] == "com.vmware.vapi.std.errors.service_unavailable"
        # another user is unaffected; a logout frees a slot
        login(sim, "api", (READONLY_USER, DEFAULT_PASSWORD))
        requests.delete(f"{sim.base_url}/api/session", headers=hdr(tokens[0]), timeout=T)
        login(sim, "api")
        sim.set_session_cap(10)
        login(sim, "rest")
        st = sim.stats()
        assert st["login_failures"] == 2
        assert st["open_sessions"] == 5


def test_idle_timeout_expires_sessions() -> None:
    with Simulator(idle_timeout=0.3) as sim:
        token = login(sim)
        keep = login(sim, "rest")
        assert requests.get(f"{sim.base_url}/api/session", headers=hdr(keep), timeout=T).status_code == 200
        time.sleep(0.45)
        r = requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=T)
        assert r.status_code == 401
        assert r.json()["error_type"] == "UNAUTHENTICATED"
        st = sim.stats()
        assert st["expired_sessions"] == 2  # `keep` idled out too, swept by stats()
        assert st["open_sessions"] == 0
        assert st["logouts"] == 0


def test_expire_all_sessions(sim: Simulator) -> None:
    tokens = [login(sim) for _ in range(3)]
    assert sim.expire_all_sessions() == 3
    assert all(get_job(sim, t, "x").status_code == 401 for t in tokens)
    assert sim.stats()["expired_sessions"] == 3


# ---- jobs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", ["rest", "api"])
def test_job_progresses_over_polls(sim: Simulator, dialect: str) -> None:
    token = login(sim, dialect)
    job_id = sim.add_job(none_polls=2, inprogress_polls=3)
    assert JOB_ID.match(job_id)
    assert sim.job_state(job_id) == "NONE"
    seen = []
    for _ in range(7):
        r = get_job(sim, token, job_id, dialect)
        assert r.status_code == 200
        seen.append(job_body(r, dialect))
    states = [s["state"] for s in seen]
    assert states == ["NONE", "NONE", "INPROGRESS", "INPROGRESS", "INPROGRESS", "SUCCEEDED", "SUCCEEDED"]
    progress = [s["progress"] for s in seen]
    assert progress[:2] == [0, 0]
    assert 0 < progress[2] < progress[3] < progress[4] < 100
    assert progress[5:] == [100, 100]
    for s in seen:
        assert s["id"] == job_id
        assert ISO_MS.match(s["start_time"])
        assert isinstance(s["messages"], list)
        if s["state"] in ("NONE", "INPROGRESS"):
            assert "end_time" not in s
        else:
            assert ISO_MS.match(s["end_time"])
            assert s["end_time"] >= s["start_time"]
    assert seen[5]["end_time"] == seen[6]["end_time"]
    assert sim.job_state(job_id) == "SUCCEEDED"
    assert sim.stats()["requests_by_route"]["GET job"] == 7


def test_failed_job_and_end_time_null(sim: Simulator) -> None:
    token = login(sim)
    job_id = sim.add_job(outcome="FAILED", inprogress_polls=1, end_time_null=True)
    running = get_job(sim, token, job_id).json()
    assert running["state"] == "INPROGRESS"
    assert "end_time" in running
    assert running["end_time"] is None
    failed = get_job(sim, token, job_id).json()
    assert failed["state"] == "FAILED"
    assert ISO_MS.match(failed["end_time"])
    assert failed["messages"][0]["id"] == "com.vmware.applmgmt.backup.job.failed"
    assert failed["messages"][0]["default_message"].startswith("Backup job failed:")
    custom = sim.add_job(
        outcome="FAILED",
        inprogress_polls=0,
        messages=[{"id": "x.y", "default_message": "disk full", "args": []}],
    )
    assert get_job(sim, token, custom).json()["messages"] == [
        {"id": "x.y", "default_message": "disk full", "args": []}
    ]


@pytest.mark.parametrize("dialect", ["rest", "api"])
def test_unknown_job_404_shape(sim: Simulator, dialect: str) -> None:
    token = login(sim, dialect)
    r = get_job(sim, token, "20170717-132629-5318154", dialect)
    assert r.status_code == 404
    body = r.json()
    if dialect == "rest":
        assert body["type"] == "com.vmware.vapi.std.errors.not_found"
        msgs = body["value"]["messages"]
    else:
        assert body["error_type"] == "NOT_FOUND"
        msgs = body["messages"]
    assert "20170717-132629-5318154" in msgs[0]["default_message"]
    assert msgs[0]["args"] == ["20170717-132629-5318154"]


def test_remove_job_and_list(sim: Simulator) -> None:
    token = login(sim)
    a, b = sim.add_job(job_id="20240101-000000-0000001"), sim.add_job()
    r = requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=T)
    assert sorted(r.json()) == sorted([a, b])
    r = requests.get(f"{sim.base_url}/rest{JOB}", headers=hdr(token), timeout=T)
    assert sorted(r.json()["value"]) == sorted([a, b])
    assert get_job(sim, token, a).status_code == 200
    assert sim.remove_job(a) is True
    assert get_job(sim, token, a).status_code == 404
    assert sim.job_state(a) is None


@pytest.mark.parametrize("dialect", ["rest", "api"])
def test_parts(sim: Simulator, dialect: str) -> None:
    token = login(sim, dialect)
    r = requests.get(
        f"{sim.base_url}/{dialect}/appliance/recovery/backup/parts", headers=hdr(token), timeout=T
    )
    assert r.status_code == 200
    parts = r.json()["value"] if dialect == "rest" else r.json()
    assert [p["id"] for p in parts] == ["common", "seat"]
    assert parts[0]["optional"] is False
    assert parts[1]["optional"] is True
    assert all(p["selected_by_default"] is True for p in parts)
    assert set(parts[0]["name"]) == {"id", "default_message", "args"}


def test_details_both_dialects(sim: Simulator) -> None:
    token = login(sim)
    job_id = sim.add_job(inprogress_polls=1)
    r = requests.get(
        f"{sim.base_url}/rest{JOB}/details", params={"filter.jobs": job_id}, headers=hdr(token), timeout=T
    )
    assert r.status_code == 200
    assert r.json()["value"][0]["key"] == job_id
    assert r.json()["value"][0]["value"]["status"] == "RUNNING"
    r = requests.get(
        f"{sim.base_url}/api{JOB}/details", params={"jobs": job_id}, headers=hdr(token), timeout=T
    )
    assert r.json()[job_id]["cancelable"] is True


# ---- start and cancel ---------------------------------------------------------------------------------
def test_start_backup_both_dialects_and_feature_in_use(sim: Simulator) -> None:
    token = login(sim)
    body = {
        **REQUEST,
        "location_user": "backup",
        "location_password": "s3cret!",
        "backup_password": "Passw0rd!",
    }
    r = requests.post(f"{sim.base_url}/rest{JOB}", json={"piece": body}, headers=hdr(token), timeout=T)
    assert r.status_code == 200
    status = r.json()["value"]
    assert status["state"] == "INPROGRESS"
    assert status["progress"] == 0
    assert "end_time" not in status
    assert JOB_ID.match(status["id"])
    st = sim.stats()
    assert st["backups_started"] == 1
    assert st["started_requests"] == [body]
    # one at a time
    r = requests.post(f"{sim.base_url}/api{JOB}", json=REQUEST, headers=hdr(token), timeout=T)
    assert r.status_code == 400
    assert r.json()["error_type"] == "FEATURE_IN_USE"
    assert r.json()["messages"][0]["default_message"] == "A backup or restore is already in progress."
    # default script: 3 INPROGRESS polls, then SUCCEEDED
    states = [get_job(sim, token, status["id"]).json()["state"] for _ in range(4)]
    assert states == ["INPROGRESS"] * 3 + ["SUCCEEDED"]
    r = requests.post(f"{sim.base_url}/api{JOB}", json=REQUEST, headers=hdr(token), timeout=T)
    assert r.status_code == 201
    assert r.json()["state"] == "INPROGRESS"
    assert sim.stats()["backups_started"] == 2


def test_start_script_is_configurable(sim: Simulator) -> None:
    token = login(sim)
    sim.set_start_script(outcome="FAILED", none_polls=1, inprogress_polls=1)
    job_id = requests.post(f"{sim.base_url}/api{JOB}", json=REQUEST, headers=hdr(token), timeout=T).json()[
        "id"
    ]
    assert [get_job(sim, token, job_id).json()["state"] for _ in range(3)] == ["NONE", "INPROGRESS", "FAILED"]


@pytest.mark.parametrize(
    ("dialect", "payload"),
    [
        ("api", {"location_type": "SFTP", "location": "sftp://h/p"}),
        ("api", {**REQUEST, "parts": "common"}),
        ("api", {**REQUEST, "parts": ["bogus"]}),
        ("api", {**REQUEST, "location_type": "GOPHER"}),
        ("api", {"parts": ["common"], "location_type": "NFS"}),
        ("api", {**REQUEST, "backup_password": "short"}),
        ("rest", REQUEST),  # /rest needs {"piece": ...}
        ("rest", {"piece": {**REQUEST, "location": 5}}),
    ],
)
def test_start_backup_invalid_argument(sim: Simulator, dialect: str, payload: dict[str, Any]) -> None:
    token = login(sim)
    r = requests.post(f"{sim.base_url}/{dialect}{JOB}", json=payload, headers=hdr(token), timeout=T)
    assert r.status_code == 400
    body = r.json()
    assert body.get("error_type", body.get("type", "").rsplit(".", 1)[-1].upper()) == "INVALID_ARGUMENT"
    assert sim.stats()["backups_started"] == 0


def test_start_backup_bad_json(sim: Simulator) -> None:
    token = login(sim)
    r = requests.post(
        f"{sim.base_url}/api{JOB}",
        data=b"{nope",
        headers={**hdr(token), "content-type": "application/json"},
        timeout=T,
    )
    assert r.status_code == 400
    assert r.json()["error_type"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("dialect", ["rest", "api"])
def test_cancel(sim: Simulator, dialect: str) -> None:
    token = login(sim)
    job_id = sim.add_job(inprogress_polls=5)
    get_job(sim, token, job_id)
    url = (
        f"{sim.base_url}/rest{JOB}/{job_id}/cancel"
        if dialect == "rest"
        else f"{sim.base_url}/api{JOB}/{job_id}"
    )
    params = {} if dialect == "rest" else {"action": "cancel"}
    r = requests.post(url, params=params, headers=hdr(token), timeout=T)
    assert r.status_code == 200
    result = r.json()["value"] if dialect == "rest" else r.json()
    assert result["status"] == "OK"
    assert isinstance(result["messages"], list)
    status = get_job(sim, token, job_id).json()
    assert status["state"] == "FAILED"
    assert status["messages"][0]["id"] == "com.vmware.applmgmt.backup.job.canceled"
    assert status["messages"][0]["default_message"] == "Backup job was canceled."
    assert ISO_MS.match(status["end_time"])
    r = requests.post(url, params=params, headers=hdr(token), timeout=T)
    assert r.status_code == 400
    body = r.json()
    assert (
        body.get("error_type") or body["type"].rsplit(".", 1)[-1].upper()
    ) == "NOT_ALLOWED_IN_CURRENT_STATE"
    missing = url.replace(job_id, "20000101-000000-0000000")
    assert requests.post(missing, params=params, headers=hdr(token), timeout=T).status_code == 404
    assert sim.stats()["cancels"] == 1
    assert sim.stats()["requests_by_route"]["POST cancel"] == 3


# ---- api_enabled -------------------------------------------------------------------------------------
def test_api_disabled_answers_plain_404() -> None:
    with Simulator(api_enabled=False) as sim:
        r = requests.post(f"{sim.base_url}/api/session", auth=ADMIN, timeout=T)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
        token = login(sim, "rest")
        r = requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=T)
        assert r.status_code == 404
        assert "error_type" not in r.text
        assert requests.get(f"{sim.base_url}/rest{JOB}", headers=hdr(token), timeout=T).status_code == 200
        sim.set_api_enabled(True)
        assert requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=T).status_code == 200


# ---- faults --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "status", "ctype"),
    [
        ("http_503_html", 503, "text/html"),
        ("http_502_html", 502, "text/html"),
        ("http_504_html", 504, "text/html"),
        ("http_503_json", 503, "application/json"),
        ("http_500_json", 500, "application/json"),
        ("not_found", 404, "application/json"),
    ],
)
@pytest.mark.parametrize("dialect", ["rest", "api"])
def test_http_error_faults(sim: Simulator, kind: str, status: int, ctype: str, dialect: str) -> None:
    token = login(sim, dialect)
    job_id = sim.add_job()
    sim.inject(kind, method="GET", path_contains=job_id)
    r = get_job(sim, token, job_id, dialect)
    assert r.status_code == status
    assert r.headers["content-type"].startswith(ctype)
    if ctype == "text/html":
        assert f"<title>{status} " in r.text
    else:
        body = r.json()
        names = {503: "service_unavailable", 500: "error", 404: "not_found"}
        if dialect == "rest":
            assert body["type"] == f"com.vmware.vapi.std.errors.{names[status]}"
        else:
            assert body["error_type"] == names[status].upper()
    assert sim.job_info(job_id)["gets"] == 0  # type: ignore[index]  # not processed
    r = get_job(sim, token, job_id, dialect)  # consumed: next request is normal
    assert r.status_code == 200
    assert sim.stats()["faults_injected"] == 1


def test_fault_matching_and_times(sim: Simulator) -> None:
    token = login(sim)
    job_id = sim.add_job()
    assert sim.inject("http_503_html", method="POST", times=2) == 2
    assert get_job(sim, token, job_id).status_code == 200  # method does not match
    r = requests.post(f"{sim.base_url}/api/session", auth=ADMIN, timeout=T)  # explicit faults hit logins too
    assert r.status_code == 503
    assert (
        requests.post(f"{sim.base_url}/api{JOB}", json=REQUEST, headers=hdr(token), timeout=T).status_code
        == 503
    )
    assert requests.post(f"{sim.base_url}/api/session", auth=ADMIN, timeout=T).status_code == 201
    sim.inject("not_found", path_contains="/nothing-matches")
    assert sim.stats()["pending_faults"] == 1
    sim.clear_faults()
    assert sim.stats()["pending_faults"] == 0
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.inject("bogus")


def test_drop_fault(sim: Simulator) -> None:
    token = login(sim)
    job_id = sim.add_job()
    sim.inject("drop", path_contains=job_id)
    with pytest.raises(requests.ConnectionError):
        get_job(sim, token, job_id)
    assert sim.job_info(job_id)["gets"] == 0  # type: ignore[index]
    assert get_job(sim, token, job_id).status_code == 200
    assert sim.stats()["faults_injected"] == 1


def test_reset_after_read_fault_still_processes(sim: Simulator) -> None:
    token = login(sim)
    sim.inject("reset_after_read", method="POST", path_contains=JOB)
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{sim.base_url}/api{JOB}", json=REQUEST, headers=hdr(token), timeout=T)
    st = sim.stats()
    assert st["backups_started"] == 1  # the backup really started
    r = requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=T)
    assert len(r.json()) == 1


def test_reset_is_a_real_rst(sim: Simulator) -> None:
    sim.inject("reset_after_read")
    with socket.create_connection((sim.host, sim.port), timeout=T) as s:
        s.sendall(b"GET /api/session HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            _read_to_eof(s)


def _read_to_eof(s: socket.socket) -> None:
    for _ in range(1000):
        if not s.recv(1024):
            return


def test_slow_fault(sim: Simulator) -> None:
    token = login(sim)
    sim.inject("slow", delay=0.4)
    t0 = time.monotonic()
    r = requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=T)
    assert r.status_code == 200
    assert time.monotonic() - t0 >= 0.35
    sim.inject("slow", delay=2.0)
    with pytest.raises(requests.Timeout):
        requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=0.3)


@pytest.mark.parametrize("dialect", ["rest", "api"])
def test_malformed_json_fault(sim: Simulator, dialect: str) -> None:
    token = login(sim, dialect)
    job_id = sim.add_job()
    sim.inject("malformed_json")
    r = get_job(sim, token, job_id, dialect)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)


def test_expire_session_fault(sim: Simulator) -> None:
    token = login(sim)
    sim.inject("expire_session", path_contains=JOB)
    assert requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=T).status_code == 401
    st = sim.stats()
    assert (st["expired_sessions"], st["open_sessions"]) == (1, 0)
    assert requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(login(sim)), timeout=T).status_code == 200


def test_chaos_is_seeded_and_spares_login() -> None:
    def run(seed: int) -> list[int]:
        with Simulator() as sim:
            token = login(sim)
            sim.set_chaos(0.5, seed=seed, kinds=["http_503_json", "http_502_html", "not_found"])
            codes = [
                requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=T).status_code
                for _ in range(30)
            ]
            for _ in range(5):
                assert requests.post(f"{sim.base_url}/api/session", auth=ADMIN, timeout=T).status_code == 201
            assert sim.stats()["faults_injected"] == sum(c != 200 for c in codes)
            sim.clear_faults()
            assert requests.get(f"{sim.base_url}/api{JOB}", headers=hdr(token), timeout=T).status_code == 200
            return codes

    first = run(7)
    assert first == run(7)
    assert {200, 503, 502, 404} <= set(first)


# ---- transport -----------------------------------------------------------------------------------------
def test_keep_alive_reuses_connection(sim: Simulator) -> None:
    token = login(sim)
    conn = http.client.HTTPConnection(sim.host, sim.port, timeout=T)
    try:
        conn.connect()
        sock = conn.sock
        for _ in range(20):
            conn.request("GET", f"/api{JOB}", headers=hdr(token))
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read()) == []
        assert conn.sock is sock
    finally:
        conn.close()


def test_garbage_request_gets_400(sim: Simulator) -> None:
    with socket.create_connection((sim.host, sim.port), timeout=T) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 400")


def test_unknown_paths(sim: Simulator) -> None:
    assert requests.get(f"{sim.base_url}/", timeout=T).status_code == 404
    token = login(sim)
    r = requests.get(f"{sim.base_url}/api/appliance/nothing", headers=hdr(token), timeout=T)
    assert r.status_code == 404
    assert r.json()["error_type"] == "NOT_FOUND"


def test_many_concurrent_clients(sim: Simulator) -> None:
    """Hundreds of keep-alive connections open at once, each polling (400: stays under 1024 fds)."""
    clients, polls = 400, 3
    token = login(sim)
    job_id = sim.add_job(inprogress_polls=10_000)
    request = (
        f"GET /api{JOB}/{job_id} HTTP/1.1\r\nHost: sim\r\nvmware-api-session-id: {token}\r\n\r\n".encode()
    )

    async def poll(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[int]:
        codes = []
        for _ in range(polls):
            writer.write(request)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = int(re.search(r"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            assert json.loads(await reader.readexactly(length))["id"] == job_id
            codes.append(int(head.split()[1]))
        return codes

    async def main() -> list[list[int]]:
        conns = await asyncio.gather(*(asyncio.open_connection(sim.host, sim.port) for _ in range(clients)))
        try:
            return await asyncio.gather(*(poll(r, w) for r, w in conns))
        finally:
            for _, w in conns:
                w.close()

    t0 = time.monotonic()
    results = asyncio.run(asyncio.wait_for(main(), 60.0))
    assert all(code == 200 for codes in results for code in codes)
    assert sim.job_info(job_id)["gets"] == clients * polls  # type: ignore[index]
    assert time.monotonic() - t0 < 30


def test_httpx_async_client(sim: Simulator) -> None:
    token = login(sim, "rest")
    job_id = sim.add_job(inprogress_polls=10_000)

    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=sim.base_url, timeout=T) as client:
            rs = await asyncio.gather(
                *(client.get(f"/rest{JOB}/{job_id}", headers=hdr(token)) for _ in range(50))
            )
            return [r.status_code for r in rs]

    assert asyncio.run(main()) == [200] * 50


def test_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with Simulator(ssl_context=server_ctx) as sim:
        assert sim.base_url.startswith("https://127.0.0.1:")
        r = requests.post(f"{sim.base_url}/api/session", auth=ADMIN, verify=str(bundle), timeout=T)
        assert r.status_code == 201
        assert "Secure" in r.headers["set-cookie"]
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(f"{sim.base_url}/api/session", auth=ADMIN, timeout=T)


# ---- control surface -----------------------------------------------------------------------------------
def test_client_and_simulator_share_the_control_api() -> None:
    names = {"add_job", "remove_job", "job_state", "job_info", "inject", "set_chaos", "clear_faults",
             "expire_all_sessions", "stats", "reset_counters", "set_api_enabled", "set_session_cap",
             "set_idle_timeout", "set_start_script"}  # fmt: skip
    for name in names:
        a, b = inspect.signature(getattr(Simulator, name)), inspect.signature(getattr(SimulatorClient, name))
        assert list(a.parameters) == list(b.parameters), name
        assert [p.default for p in a.parameters.values()] == [p.default for p in b.parameters.values()], name


def test_simulator_client_against_in_process_server(sim: Simulator) -> None:
    client = SimulatorClient(sim.base_url)
    client.wait_ready(5.0)
    job_id = client.add_job(none_polls=1, inprogress_polls=1, outcome="FAILED")
    assert client.job_state(job_id) == "NONE"
    assert client.job_state("nope") is None
    token = login(sim)
    client.inject("http_503_html", path_contains=job_id)
    assert get_job(sim, token, job_id).status_code == 503
    assert [get_job(sim, token, job_id).json()["state"] for _ in range(3)] == ["NONE", "INPROGRESS", "FAILED"]
    assert client.job_info(job_id)["polls"] == 3  # type: ignore[index]
    st = client.stats()
    assert st["faults_injected"] == 1
    assert st["requests_by_route"]["GET job"] == 4
    assert "GET stats" not in st["requests_by_route"]  # control calls are not counted
    client.set_session_cap(1)
    assert requests.post(f"{sim.base_url}/api/session", auth=ADMIN, timeout=T).status_code == 503
    assert client.expire_all_sessions() == 1
    client.set_api_enabled(False)
    assert requests.post(f"{sim.base_url}/api/session", auth=ADMIN, timeout=T).status_code == 404
    client.set_api_enabled(True)
    client.set_idle_timeout(900)
    client.set_chaos(1.0, seed=1, kinds=["http_504_html"])
    client.clear_faults()
    client.set_start_script("SUCCEEDED", 0, 1)
    assert client.remove_job(job_id) is True
    client.reset_counters()
    assert client.stats()["requests"] == 0
    with pytest.raises(RuntimeError, match="HTTP 400"):
        client.inject("bogus")


# ---- process mode --------------------------------------------------------------------------------------
def _wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"simulator did not write {path} (exit={proc.poll()})")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def test_process_mode(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    cmd = [
        sys.executable, "-m", "airflow_provider_backupjob.simulator", "--port", "0",
        "--port-file", str(port_file), "--session-cap", "5",
        "--job", "20170717-132629-5318154:FAILED:0:1", "--rest-only",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        port = int(_wait_for_file(port_file, proc))
        base = f"http://127.0.0.1:{port}"
        r = requests.post(f"{base}{REST_SESSION}", auth=ADMIN, timeout=T)
        assert r.status_code == 200
        token = r.json()["value"]
        r = requests.get(f"{base}/rest{JOB}/20170717-132629-5318154", headers=hdr(token), timeout=T)
        assert r.json()["value"]["state"] == "INPROGRESS"
        assert requests.post(f"{base}/api/session", auth=ADMIN, timeout=T).status_code == 404  # --rest-only
        client = SimulatorClient(base)
        assert client.stats()["logins"] == 1
        assert client.job_state("20170717-132629-5318154") == "INPROGRESS"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert out.splitlines()[0] == f"vCenter simulator listening on http://127.0.0.1:{port}"


def test_process_refuses_remote_bind() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_backupjob.simulator", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--allow-remote" in proc.stderr


def test_simulator_does_not_import_airflow() -> None:
    import ast

    for path in (ROOT / "airflow_provider_backupjob" / "simulator").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            assert not any(n == "airflow" or n.startswith("airflow.") for n in names), (path, names)


def test_chaos_all_kinds_keeps_serving(sim: Simulator) -> None:
    token = login(sim, "rest")
    job_id = sim.add_job(inprogress_polls=10_000)
    sim.set_chaos(0.6, seed=3, delay=0.01)  # every kind, including drop / reset / expire_session
    outcomes: dict[str, int] = {}
    with requests.Session() as s:
        for _ in range(60):
            try:
                r = s.get(f"{sim.base_url}/rest{JOB}/{job_id}", headers=hdr(token), timeout=T)
                key = str(r.status_code)
                if r.status_code == 401:
                    token = login(sim, "rest")
            except requests.ConnectionError:
                key = "conn"
            outcomes[key] = outcomes.get(key, 0) + 1
    assert {"200", "conn"} <= set(outcomes)
    assert sim.stats()["faults_injected"] > 10
    sim.clear_faults()
    assert get_job(sim, login(sim), job_id).status_code == 200
