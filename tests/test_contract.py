"""The vendor's spec as a contract: every request the protocol builds and every body the simulator
serves (over a real loopback socket), validated against ../shared/spec/vmware-rest-8.0.2/backup-api.json
with the known deviations of tests/spec_deviations.py and nothing else loosened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_backupjob.models import BackupRequest
from airflow_provider_backupjob.protocol import (
    SESSION_HEADER,
    Dialect,
    Exchange,
    HttpRequest,
    HttpResponse,
    VCenterSession,
    cancel_job_request,
    details_request,
    drive,
    get_job_request,
    job_path,
    list_jobs_request,
    list_parts_request,
    login_request,
    logout_request,
    start_backup_request,
)
from airflow_provider_backupjob.simulator import ADMIN_USER, DEFAULT_PASSWORD, READONLY_USER, Simulator
from tests.spec_contract import SPEC_ENV, Contract, ContractViolation, SpecMissing, load_contract
from tests.spec_deviations import DEVIATIONS, Deviation

DIALECTS = [Dialect.API, Dialect.REST]
JOB = "20170717-132629-5318154"
FULL_REQUEST = BackupRequest(
    parts=["common", "seat"],
    location_type="SFTP",
    location="sftp://10.0.0.5/backups/vc01",
    location_user="backup",
    location_password="loc-Secret-1",
    backup_password="Backup-Secret-1",
    comment="nightly",
    fast_backup=True,
)
BASE = {Dialect.API: "/api/appliance/recovery/backup", Dialect.REST: "/rest/appliance/recovery/backup"}


@pytest.fixture(scope="session")
def contract() -> Contract:
    try:
        return load_contract()
    except SpecMissing as err:
        if os.environ.get("CI"):
            pytest.fail(f"{err}; CI must provide it")
        pytest.skip(str(err))


def _payload(dialect: Dialect, resp: HttpResponse) -> Any:
    body = json.loads(resp.body)
    return body if dialect is Dialect.API else body["value"]


class Wire:
    """A transport for protocol requests to the simulator over loopback; records every exchange."""

    def __init__(self, sim: Simulator) -> None:
        self.client = httpx.Client(base_url=sim.base_url, timeout=10.0, trust_env=False)
        self.log: list[tuple[HttpRequest, HttpResponse]] = []

    def __call__(self, req: HttpRequest) -> HttpResponse:
        r = self.client.request(req.method, req.target, headers=req.headers, json=req.json_body)
        resp = HttpResponse(r.status_code, r.content, r.headers.get("content-type", ""))
        self.log.append((req, resp))
        return resp

    def login(self, dialect: Dialect, user: str = ADMIN_USER) -> str:
        resp = self(login_request(dialect, user, DEFAULT_PASSWORD))
        assert resp.status in (200, 201), resp
        token: str = _payload(dialect, resp)
        return token

    def send(self, req: HttpRequest, token: str | None) -> HttpResponse:
        return self(req.with_headers({SESSION_HEADER: token}) if token else req)


@pytest.fixture
def wire(sim: Simulator) -> Iterator[Wire]:
    w = Wire(sim)
    yield w
    w.client.close()


def validated(contract: Contract, wire: Wire, *, requests: bool = True) -> list[tuple[str, int]]:
    """Check every recorded exchange; the (operation, status) pairs, in order."""
    seen = []
    for req, resp in wire.log:
        if requests:
            contract.check_request(req)
        op = contract.check_response(req.method, req.target, resp)
        seen.append((op.name, resp.status))
    return seen


def authed(dialect: Dialect, build: Callable[[Dialect], HttpRequest], token: str) -> HttpRequest:
    return build(dialect).with_headers({SESSION_HEADER: token})


# ---- (a) the protocol's requests, as its session flow sends them ------------------------------------
def _session(dialect: Dialect) -> VCenterSession:
    return VCenterSession(username=ADMIN_USER, password=DEFAULT_PASSWORD, api_style=dialect.value)


FLOWS: dict[str, tuple[str, str, Callable[[VCenterSession, str], Exchange[Any]]]] = {
    # name: (HttpRequest.operation, the spec operation's path below the dialect's base, the exchange)
    "login": ("log in", "", lambda s, job: s.login()),
    "list_jobs": ("list backup jobs", "/job", lambda s, job: s.list_jobs()),
    "list_parts": ("list backup parts", "/parts", lambda s, job: s.list_parts()),
    "get_job": ("get the backup job", "/job/{id}", lambda s, job: s.get_job(job)),
    "start_backup": ("start a backup", "/job", lambda s, job: s.start_backup(FULL_REQUEST)),
    "cancel_job": ("cancel the backup job", "/job/{id}", lambda s, job: s.cancel_job(job)),
    "list_job_details": (
        "get backup job details",
        "/job/details",
        lambda s, job: s.list_job_details([job]),
    ),
}
JOB_FLOWS = ("get_job", "cancel_job", "list_job_details")
SESSION_PATHS = {Dialect.API: "/api/session", Dialect.REST: "/rest/com/vmware/cis/session"}


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.value)
@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_protocol_requests_match_their_operations(
    contract: Contract, sim: Simulator, wire: Wire, dialect: Dialect, flow: str
) -> None:
    what, sub_path, exchange = FLOWS[flow]
    job = sim.add_job(inprogress_polls=5) if flow in JOB_FLOWS else JOB
    session = _session(dialect)
    drive(exchange(session, job), wire)
    assert drive(session.logout(), wire) is True
    seen = validated(contract, wire)
    ops = {req.operation: name for (req, _), (name, _) in zip(wire.log, seen, strict=True)}
    template = SESSION_PATHS[dialect] if flow == "login" else BASE[dialect] + sub_path
    if flow == "cancel_job" and dialect is Dialect.REST:
        template += "/cancel"
    assert ops[what].split(" ", 1)[1] == template
    assert ops["log in"] == f"POST {SESSION_PATHS[dialect]}"
    assert ops["log out"] == f"DELETE {SESSION_PATHS[dialect]}"
    assert all(200 <= status < 300 for _, status in seen), seen


def test_every_request_builder_is_covered() -> None:
    """The flows above reach every request builder of the protocol layer (by its operation words)."""
    builders: list[Callable[[Dialect], HttpRequest]] = [
        lambda d: login_request(d, "u", "p"),
        logout_request,
        lambda d: get_job_request(d, JOB),
        list_jobs_request,
        list_parts_request,
        lambda d: start_backup_request(d, FULL_REQUEST),
        lambda d: cancel_job_request(d, JOB),
        lambda d: details_request(d, [JOB]),
    ]
    words = {"log out"} | {what for what, _, _ in FLOWS.values()}
    assert {build(d).operation for d in DIALECTS for build in builders} == words


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
REQUESTS = st.builds(
    BackupRequest,
    parts=st.lists(_TEXT.filter(bool), min_size=1, max_size=4),
    location_type=st.sampled_from(BackupRequest.LOCATION_TYPES),
    location=_TEXT.filter(bool),
    location_user=st.none() | _TEXT,
    location_password=st.none() | _TEXT,
    backup_password=st.none() | st.text(min_size=8, max_size=20),
    comment=st.none() | _TEXT,
    fast_backup=st.none() | st.booleans(),
)
JOB_IDS = st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True).filter(lambda j: set(j) != {"."})


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(request=REQUESTS, job_id=JOB_IDS, dialect=st.sampled_from(DIALECTS))
def test_any_request_the_builders_accept_is_one_the_spec_allows(
    contract: Contract, request: BackupRequest, job_id: str, dialect: Dialect
) -> None:
    """Whatever BackupRequest and job id the protocol lets through, the spec allows the request."""
    builders: list[Callable[[Dialect], HttpRequest]] = [
        lambda d: start_backup_request(d, request),
        lambda d: get_job_request(d, job_id),
        lambda d: cancel_job_request(d, job_id),
    ]
    for build in builders:
        contract.check_request(authed(dialect, build, "token"))


def test_api_cancel_is_the_action_query_of_the_job_operation(contract: Contract) -> None:
    req = authed(Dialect.API, lambda d: cancel_job_request(d, JOB), "token")
    op = contract.check_request(req)
    assert op.spec["x-original-path"] == "/api/appliance/recovery/backup/job/{id}?action=cancel"
    assert req.target.endswith(f"/job/{JOB}?action=cancel")


def _with_target(req: HttpRequest, target: str) -> HttpRequest:
    return HttpRequest(req.method, target, req.operation, req.headers, req.json_body)


def _with_body(req: HttpRequest, body: Any) -> HttpRequest:
    return HttpRequest(req.method, req.target, req.operation, req.headers, body)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("cancel without action", "required query parameter 'action' is missing"),
        ("cancel with another action", "query action: 'stop' is not one of"),
        ("undeclared query", "query parameter 'verbose' is not declared"),
        ("rest start without piece", "'piece' is a required property"),
        ("api start wrapped in piece", "'parts' is a required property"),
        ("start with an undeclared field", "Additional properties are not allowed"),
        ("get with a body", "a body is sent to an operation that takes none"),
        ("no session header", "security session_id is not satisfied"),
        ("rest login without basic auth", "security basic_auth is not satisfied"),
        ("unknown path", "no operation of the spec has this method and path"),
        ("wrong method", "no operation of the spec has this method and path"),
    ],
)
def test_the_request_check_rejects_what_the_spec_does_not_allow(
    contract: Contract, case: str, match: str
) -> None:
    api_cancel = authed(Dialect.API, lambda d: cancel_job_request(d, JOB), "t")
    api_start = authed(Dialect.API, lambda d: start_backup_request(d, FULL_REQUEST), "t")
    rest_start = authed(Dialect.REST, lambda d: start_backup_request(d, FULL_REQUEST), "t")
    get = authed(Dialect.API, lambda d: get_job_request(d, JOB), "t")
    bad = {
        "cancel without action": _with_target(api_cancel, job_path(Dialect.API, JOB)),
        "cancel with another action": _with_target(api_cancel, job_path(Dialect.API, JOB) + "?action=stop"),
        "undeclared query": _with_target(get, get.target + "?verbose=1"),
        "rest start without piece": _with_body(rest_start, FULL_REQUEST.to_json()),
        "api start wrapped in piece": _with_body(api_start, {"piece": FULL_REQUEST.to_json()}),
        "start with an undeclared field": _with_body(api_start, {**FULL_REQUEST.to_json(), "compress": True}),
        "get with a body": _with_body(get, {}),
        "no session header": get_job_request(Dialect.REST, JOB),
        "rest login without basic auth": HttpRequest("POST", SESSION_PATHS[Dialect.REST], "log in"),
        "unknown path": _with_target(get, "/api/appliance/recovery/backup/jobs"),
        "wrong method": HttpRequest("PUT", get.target, "x", get.headers),
    }[case]
    with pytest.raises(ContractViolation, match=match):
        contract.check_request(bad)


# ---- (b) the simulator's bodies ------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.value)
def test_every_job_state_validates(contract: Contract, sim: Simulator, wire: Wire, dialect: Dialect) -> None:
    token = wire.login(dialect)
    scripted = sim.add_job(none_polls=1, inprogress_polls=1)  # NONE, INPROGRESS, SUCCEEDED
    failed = sim.add_job(outcome="FAILED", inprogress_polls=0)
    silent = sim.add_job(outcome="FAILED", inprogress_polls=0, messages=[])
    told = sim.add_job(inprogress_polls=0, messages=[{"id": "a.b", "default_message": "x", "args": [1]}])
    running_null_end = sim.add_job(inprogress_polls=2, end_time_null=True)
    states = []
    for job in [scripted] * 3 + [failed, silent, told, running_null_end]:
        resp = wire.send(get_job_request(dialect, job), token)
        assert resp.status == 200, resp
        states.append(_payload(dialect, resp)["state"])
    wire.send(logout_request(dialect), token)
    validated(contract, wire)
    assert states == ["NONE", "INPROGRESS", "SUCCEEDED", "FAILED", "FAILED", "SUCCEEDED", "INPROGRESS"]
    assert b'"end_time": null' in wire.log[-2][1].body  # the end_time_nullable deviation in play


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.value)
def test_job_list_parts_login_and_logout_validate(
    contract: Contract, sim: Simulator, wire: Wire, dialect: Dialect
) -> None:
    token = wire.login(dialect)
    wire.send(list_jobs_request(dialect), token)
    sim.add_job()
    sim.add_job(outcome="FAILED")
    wire.send(list_jobs_request(dialect), token)
    wire.send(list_parts_request(dialect), token)
    wire.send(logout_request(dialect), token)
    wire.send(logout_request(dialect), token)  # a token already logged out: 401
    ok = 201 if dialect is Dialect.API else 200
    gone = 204 if dialect is Dialect.API else 200
    assert [status for _, status in validated(contract, wire)] == [ok, 200, 200, 200, gone, 401]
    assert [len(_payload(dialect, wire.log[i][1])) for i in (1, 2, 3)] == [0, 2, 2]  # jobs, jobs, parts


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.value)
def test_start_and_cancel_results_and_their_refusals_validate(
    contract: Contract, sim: Simulator, wire: Wire, dialect: Dialect
) -> None:
    token = wire.login(dialect)
    started = wire.send(start_backup_request(dialect, FULL_REQUEST), token)
    job = _payload(dialect, started)["id"]
    wire.send(start_backup_request(dialect, FULL_REQUEST), token)  # 400 feature_in_use
    wire.send(cancel_job_request(dialect, job), token)  # OK
    wire.send(cancel_job_request(dialect, job), token)  # 400 not_allowed_in_current_state
    canceled = wire.send(get_job_request(dialect, job), token)
    bogus = BackupRequest(parts=["common", "bogus"], location_type="NFS", location="nfs://10.0.0.5/b")
    wire.send(start_backup_request(dialect, bogus), token)  # 400 invalid_argument
    wire.send(cancel_job_request(dialect, "20000101-000000-1234567"), token)  # 404
    wire.send(logout_request(dialect), token)
    seen = validated(contract, wire)
    created = 201 if dialect is Dialect.API else 200
    assert [status for _, status in seen[1:-1]] == [created, 400, 200, 400, 200, 400, 404]
    assert _payload(dialect, canceled)["state"] == "FAILED"
    names = [_error_name(dialect, resp) for _, resp in wire.log[2:-1] if resp.status >= 400]
    assert names == ["feature_in_use", "not_allowed_in_current_state", "invalid_argument", "not_found"]


def _error_name(dialect: Dialect, resp: HttpResponse) -> str:
    body = json.loads(resp.body)
    name: str = body["error_type"].lower() if dialect is Dialect.API else body["type"].rsplit(".", 1)[-1]
    return name


_GOOD = FULL_REQUEST.to_json()
BAD_PIECES = {
    "no parts": {k: v for k, v in _GOOD.items() if k != "parts"},
    "parts not a list": {**_GOOD, "parts": "common"},
    "a part not a string": {**_GOOD, "parts": ["common", 7]},
    "unknown location type": {**_GOOD, "location_type": "TAPE"},
    "no location": {k: v for k, v in _GOOD.items() if k != "location"},
    "location not a string": {**_GOOD, "location": ["sftp://x/y"]},
    "user not a string": {**_GOOD, "location_user": 42},
    "comment not a string": {**_GOOD, "comment": False},
    "fast_backup not a boolean": {**_GOOD, "fast_backup": "yes"},
    "not an object": ["common"],
}


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.value)
@pytest.mark.parametrize("case", sorted(BAD_PIECES))
def test_the_simulator_refuses_the_start_bodies_the_spec_refuses(
    contract: Contract, sim: Simulator, wire: Wire, dialect: Dialect, case: str
) -> None:
    piece = BAD_PIECES[case]
    body = piece if dialect is Dialect.API else {"piece": piece}
    token = wire.login(dialect)
    start = HttpRequest("POST", job_path(dialect), "start a backup", {SESSION_HEADER: token}, body)
    with pytest.raises(ContractViolation, match="body"):
        contract.check_request(start)
    refused = wire(start)
    wire.send(logout_request(dialect), token)
    assert (refused.status, _error_name(dialect, refused)) == (400, "invalid_argument")
    assert sim.stats()["backups_started"] == 0
    validated(contract, wire, requests=False)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.value)
def test_error_bodies_validate(contract: Contract, sim: Simulator, wire: Wire, dialect: Dialect) -> None:
    job = sim.add_job()
    missing = "20000101-000000-1234567"
    every_op: list[Callable[[Dialect], HttpRequest]] = [
        list_jobs_request,
        list_parts_request,
        lambda d: get_job_request(d, job),
        lambda d: start_backup_request(d, FULL_REQUEST),
        lambda d: cancel_job_request(d, job),
    ]
    for build in every_op:
        wire.send(build(dialect), None)  # 401: no session
    readonly = wire.login(dialect, READONLY_USER)
    for build in every_op:
        wire.send(build(dialect), readonly)  # 403
    wire.send(logout_request(dialect), readonly)
    token = wire.login(dialect)
    wire.send(get_job_request(dialect, missing), token)  # 404 from the appliance
    sim.inject("not_found", path_contains=job)
    wire.send(get_job_request(dialect, job), token)  # 404 from a fault
    sim.inject("http_500_json", path_contains=job)
    wire.send(get_job_request(dialect, job), token)  # 500 generic error
    sim.inject("http_503_json", path_contains="/parts")
    wire.send(list_parts_request(dialect), token)  # 503 service unavailable
    wire.send(logout_request(dialect), token)
    wire.send(login_request(dialect, ADMIN_USER, "wrong-password"), None)  # 401 at login
    statuses = [status for _, status in validated(contract, wire, requests=False)]  # some lack a token
    ok, gone = (201, 204) if dialect is Dialect.API else (200, 200)
    assert statuses == [401] * 5 + [ok, *[403] * 5, gone, ok, 404, 404, 500, 503, gone, 401]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.value)
def test_session_cap_refusal_validates(
    contract: Contract, wire: Wire, sim: Simulator, dialect: Dialect
) -> None:
    sim.set_session_cap(1)
    token = wire.login(dialect)
    refused = wire(login_request(dialect, ADMIN_USER, DEFAULT_PASSWORD))
    wire.send(logout_request(dialect), token)
    assert refused.status == 503
    assert b"failedToLoginMaxUserSessionCountReached" in refused.body
    validated(contract, wire)


def test_api_session_info_validates(contract: Contract, sim: Simulator, wire: Wire) -> None:
    token = wire.login(Dialect.API)
    info = wire.send(HttpRequest("GET", "/api/session", "get the session"), token)
    wire.send(logout_request(Dialect.API), token)
    gone = wire.send(HttpRequest("GET", "/api/session", "get the session"), token)
    assert (info.status, gone.status) == (200, 401)
    assert json.loads(info.body)["user"] == ADMIN_USER
    validated(contract, wire)


DETAIL_CASES = [
    "running",
    "succeeded",
    "failed",
    "failed without messages",
    "started with a request",
    "all jobs",
]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.value)
@pytest.mark.parametrize("case", DETAIL_CASES)
def test_job_details_validate(
    contract: Contract, sim: Simulator, wire: Wire, dialect: Dialect, case: str
) -> None:
    token = wire.login(dialect)
    jobs = {
        "running": lambda: [sim.add_job(inprogress_polls=3)],
        "succeeded": lambda: [sim.add_job(inprogress_polls=0)],
        "failed": lambda: [sim.add_job(outcome="FAILED", inprogress_polls=0)],
        "failed without messages": lambda: [sim.add_job(outcome="FAILED", inprogress_polls=0, messages=[])],
        "started with a request": lambda: [
            _payload(Dialect.API, wire.send(start_backup_request(Dialect.API, FULL_REQUEST), token))["id"]
        ],
        "all jobs": lambda: [
            sim.add_job(inprogress_polls=0),
            sim.add_job(outcome="FAILED", inprogress_polls=0),
        ],
    }[case]()
    for job in jobs:
        wire.send(get_job_request(dialect, job), token)  # let the job report its state
    answer = wire.send(details_request(dialect, None if case == "all jobs" else jobs), token)
    wire.send(logout_request(dialect), token)
    assert answer.status == 200
    validated(contract, wire)


# ---- (c) the deviations --------------------------------------------------------------------------------
@pytest.mark.parametrize("deviation", [d for d in DEVIATIONS if d.example], ids=lambda d: d.key)
def test_each_deviation_is_still_needed(contract: Contract, deviation: Deviation) -> None:
    """Without the entry the example is judged the other way: the entry is needed and applied."""
    ex = deviation.example
    assert ex is not None
    resp = HttpResponse(ex.status, json.dumps(ex.body).encode(), "application/json")
    admitted, refused = (contract, contract.without(deviation.key))
    if deviation.kind == "tighten":
        admitted, refused = refused, admitted
    admitted.check_response(ex.method, ex.path, resp)
    with pytest.raises(ContractViolation):
        refused.check_response(ex.method, ex.path, resp)


def test_api_login_needs_basic_auth_only_by_the_session_security_deviation(contract: Contract) -> None:
    bare = HttpRequest("POST", "/api/session", "log in")
    contract.without("api_session_security").check_request(bare)
    with pytest.raises(ContractViolation, match="security basic_auth"):
        contract.check_request(bare)
    contract.check_request(login_request(Dialect.API, "u", "p"))


def test_deviations_are_listed_once_with_reasons() -> None:
    keys = [d.key for d in DEVIATIONS]
    assert len(keys) == len(set(keys))
    for d in DEVIATIONS:
        assert d.kind in ("admit", "tighten")
        assert d.reason and d.applied_to


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (418, b"{}", "status not declared"),
        (200, b"not json", "body is not JSON"),
        (200, b'{"value": {"id": "x"}}', "is a required property"),
    ],
)
def test_the_response_check_rejects_what_the_spec_does_not_allow(
    contract: Contract, status: int, body: bytes, match: str
) -> None:
    with pytest.raises(ContractViolation, match=match):
        contract.check_response(
            "GET", f"{BASE[Dialect.REST]}/job/{JOB}", HttpResponse(status, body, "application/json")
        )
    with pytest.raises(ContractViolation, match="declares no body"):
        contract.check_response("DELETE", "/api/session", HttpResponse(204, b"{}", "application/json"))


def test_an_absent_spec_is_a_clear_skip_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SPEC_ENV, str(tmp_path))
    with pytest.raises(SpecMissing, match=rf"{tmp_path}/backup-api.json is absent.*\.\./shared/spec/"):
        load_contract.__wrapped__()
