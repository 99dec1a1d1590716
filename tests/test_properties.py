"""Property-based tests of the sans-IO protocol and the waiting decision (hypothesis).

Whatever vCenter answers (any status code, any body, either dialect), parsing yields a valid
``BackupJobStatus`` or one of this provider's errors, never a stray KeyError or TypeError; only a 2xx
body that says SUCCEEDED reads as success, and only that makes a wait done. Whatever text a job id is,
it is refused before any request or stays one path segment under ``.../recovery/backup/job/``.
Every decoder of outside data is total: any JSON value gives a typed result or a ``VCenterError``.

The examples come from the hypothesis profile tests/helpers.py loads: "ci" (derandomized, the same
on every run) unless ``make fuzz`` asks for "fuzz" (many more, from a fresh seed).
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import requests
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from hypothesis import event, example, given
from hypothesis import strategies as st

from airflow_provider_backupjob import protocol
from airflow_provider_backupjob.exceptions import (
    BackupJobNotFound,
    VCenterApiError,
    VCenterAuthError,
    VCenterConfigError,
    VCenterError,
    VCenterUnavailableError,
    error_from_event,
)
from airflow_provider_backupjob.models import (
    BackupJobState,
    BackupJobStatus,
    CancelResult,
    LocalizableMessage,
)
from airflow_provider_backupjob.outcome import event_outcome, job_outcome
from airflow_provider_backupjob.protocol import Dialect, HttpRequest, HttpResponse, VCenterSession
from airflow_provider_backupjob.retry import RetryPolicy
from airflow_provider_backupjob.simulator import DEFAULT_PASSWORD

JOB = "20170717-132629-5318154"
START = "2017-07-17T13:26:29.651Z"
# VCenterConfigError: a 404 to a login on /api with api_style "api" (set it to auto or rest)
OUR_ERRORS = (VCenterApiError, BackupJobNotFound, VCenterAuthError, VCenterConfigError)
SESSION_TARGETS = {"/api/session", "/rest/com/vmware/cis/session"}
JOB_PREFIX = {
    Dialect.API: "/api/appliance/recovery/backup/job/",
    Dialect.REST: "/rest/appliance/recovery/backup/job/",
}


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------
def texts(**kwargs: Any) -> st.SearchStrategy[str]:
    """``st.text()`` without the simulator's password. Hypothesis also draws string literals it finds
    in the project's source, that password among them, and the leak check of conftest.py rightly
    fails a test whose error messages carry it (here only because a generated body quoted it)."""
    return st.text(**kwargs).filter(lambda text: DEFAULT_PASSWORD not in text)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts(max_size=24)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(max_size=10), inner, max_size=5),
    max_leaves=24,
)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets)
timestamps = st.one_of(
    # vCenter's own form, 2015-01-01T22:13:05.651Z, and other ISO 8601 spellings
    moments.map(
        lambda d: d.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    ),
    moments.map(lambda d: d.isoformat()),
    moments.map(lambda d: d.isoformat(timespec="seconds")),
    moments.map(lambda d: d.date().isoformat()),
)
messages = st.lists(
    st.fixed_dictionaries(
        {"id": texts(max_size=20), "default_message": texts(max_size=30)},
        optional={"args": st.lists(texts(max_size=8) | st.integers(), max_size=3)},
    ),
    max_size=3,
)
STATES = [s.value for s in BackupJobState]
valid_statuses = st.fixed_dictionaries(
    {
        "id": st.just(JOB) | texts(max_size=24),
        "state": st.sampled_from(STATES),
        "progress": st.integers(0, 100),
        "messages": messages,
        "start_time": timestamps,
    },
    optional={"end_time": st.none() | timestamps},
)
NEAR_MISSES = [
    "succeeded",
    "Succeeded",
    "SUCCEEDED ",
    " SUCCEEDED",
    "SUCCESS",
    "SUCCEEDED\x00",
    "SUCCEED",
    "",
]
NEAR_MISSES += ["\uff33\uff35\uff23\uff23\uff25\uff25\uff24\uff25\uff24", "SUCCEEDED\n", "COMPLETED", "DONE"]


@st.composite
def mutated_statuses(draw: st.DrawFn) -> Any:
    """A valid BackupJobStatus body with one to three things wrong (or not)."""
    body: dict[str, Any] = dict(draw(valid_statuses))
    keys = sorted(body) or ["state"]
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["drop", "replace", "near_miss", "extra", "retype", "wrap"]))
        key = draw(st.sampled_from(keys))
        if how == "drop":
            body.pop(key, None)
        elif how == "replace":
            body[key] = draw(json_values)
        elif how == "near_miss":
            body["state"] = draw(st.sampled_from(NEAR_MISSES) | texts(max_size=12))
        elif how == "extra":
            body[draw(texts(max_size=10))] = draw(json_values)
        elif how == "retype":
            body[key] = draw(st.sampled_from([True, False, 1.5, "100", [], {}, None, 0]))
        else:
            return draw(
                st.sampled_from([[body], {"value": body}, {"value": {"value": body}}, json.dumps(body)])
            )
    return body


payloads = mutated_statuses() | valid_statuses | json_values


@st.composite
def bodies(draw: st.DrawFn, dialect: Dialect) -> bytes:
    """The bytes of an answer: a payload wrapped (or not, or wrongly) for the dialect, or garbage."""
    payload = draw(payloads)
    wrap = draw(st.sampled_from(["right", "right", "right", "bare", "value"]))
    if wrap == "right":
        obj = {"value": payload} if dialect is Dialect.REST else payload
    else:
        obj = payload if wrap == "bare" else {"value": payload}
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    how = draw(st.sampled_from(["utf-8"] * 6 + ["utf-16", "truncated", "binary", "empty"]))
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "truncated":
        return text.encode()[: draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "binary":
        return draw(st.binary(max_size=64))
    if how == "empty":
        return b""
    return text.encode()


statuses = (
    st.sampled_from([200, 201])
    | st.sampled_from([204, 301, 400, 401, 403, 404, 500, 502, 503, 504])
    | st.integers(100, 599)
)
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/html", ""])
dialects = st.sampled_from(list(Dialect))


@st.composite
def responses(draw: st.DrawFn, dialect: Dialect) -> HttpResponse:
    return HttpResponse(draw(statuses), draw(bodies(dialect)), draw(content_types))


# --------------------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------------------
def says_succeeded(dialect: Dialect, resp: HttpResponse) -> bool:
    """Independently of the code under test: a 2xx JSON body whose payload has state SUCCEEDED."""
    if not 200 <= resp.status < 300:
        return False
    try:
        body = json.loads(resp.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    if dialect is Dialect.REST:
        if not isinstance(body, dict) or "value" not in body:
            return False
        body = body["value"]
    return isinstance(body, dict) and body.get("state") == "SUCCEEDED"


def check_error(err: VCenterError, job_id: str) -> None:
    assert isinstance(err, OUR_ERRORS), f"{type(err).__name__} is none of {OUR_ERRORS}"
    assert isinstance(str(err), str) and err.detail
    # the trigger carries it as a JSON event and the task rebuilds it: the same class and text
    event = json.loads(json.dumps(err.to_event()))
    rebuilt = error_from_event(event)
    assert type(rebuilt) is type(err) and str(rebuilt) == str(err)
    # and an error never lets a wait succeed (nor keep waiting)
    with pytest.raises(AirflowException):
        job_outcome(job_id, err)


def check_status(status: BackupJobStatus, dialect: Dialect, resp: HttpResponse, job_id: str) -> None:
    assert isinstance(status, BackupJobStatus) and isinstance(status.state, BackupJobState)
    assert 200 <= resp.status < 300
    assert status.succeeded == says_succeeded(dialect, resp)
    if status.id != job_id:  # another job's status: never an outcome of this one
        with pytest.raises(AirflowException) as raised:
            job_outcome(job_id, status)
        assert not isinstance(raised.value, AirflowFailException)
    elif status.state is BackupJobState.FAILED:
        with pytest.raises(AirflowFailException):
            job_outcome(job_id, status)
    else:
        outcome = job_outcome(job_id, status)
        assert outcome.is_done == status.succeeded
        if outcome.is_done:
            assert outcome.xcom_value == status.to_dict()
    if status.is_terminal:  # the trigger's terminal event, through JSON, says the same
        event = json.loads(json.dumps({"job_id": job_id, "status": "terminal", "job": status.to_dict()}))
        if status.succeeded and status.id == job_id:
            assert event_outcome(job_id, event).xcom_value == status.to_dict()
        else:
            with pytest.raises(AirflowException):
                event_outcome(job_id, event)


def parse(dialect: Dialect, resp: HttpResponse, job_id: str = JOB) -> BackupJobStatus | VCenterError:
    req = protocol.get_job_request(dialect, job_id)
    try:
        status = protocol.parse_job(dialect, req, resp)
    except VCenterError as err:  # anything else (KeyError, TypeError, ...) fails the test
        event(type(err).__name__)
        check_error(err, job_id)
        return err
    event(f"status {status.state.value}")
    check_status(status, dialect, resp, job_id)
    return status


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------
@given(data=st.data(), dialect=dialects)
def test_any_answer_parses_to_a_status_or_our_error(data: st.DataObject, dialect: Dialect) -> None:
    parse(dialect, data.draw(responses(dialect)))


@given(body=valid_statuses, dialect=dialects, status=st.sampled_from([200, 201]))
def test_a_well_formed_status_always_parses(body: dict[str, Any], dialect: Dialect, status: int) -> None:
    wrapped = {"value": body} if dialect is Dialect.REST else body
    result = parse(dialect, HttpResponse(status, json.dumps(wrapped).encode(), "application/json"))
    assert isinstance(result, BackupJobStatus), result
    assert (result.id, result.state.value, result.progress) == (body["id"], body["state"], body["progress"])
    assert result.succeeded == (body["state"] == "SUCCEEDED")
    # what the trigger stores in its event reads back as the same status
    assert BackupJobStatus.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@given(body=mutated_statuses(), dialect=dialects, status=st.sampled_from([200, 201, 204]))
def test_a_mutated_status_succeeds_only_if_it_says_succeeded(
    body: Any, dialect: Dialect, status: int
) -> None:
    wrapped = {"value": body} if dialect is Dialect.REST else body
    parse(dialect, HttpResponse(status, json.dumps(wrapped).encode(), "application/json"))


@given(
    body=valid_statuses, dialect=dialects, status=st.integers(100, 599).filter(lambda s: not 200 <= s < 300)
)
def test_a_success_body_with_a_non_2xx_status_is_an_error(
    body: dict[str, Any], dialect: Dialect, status: int
) -> None:
    body = {**body, "id": JOB, "state": "SUCCEEDED"}
    wrapped = {"value": body} if dialect is Dialect.REST else body
    result = parse(dialect, HttpResponse(status, json.dumps(wrapped).encode(), "application/json"))
    assert isinstance(result, VCenterError)


@pytest.mark.parametrize("status", [200, 400, 503])
@pytest.mark.parametrize("dialect", list(Dialect))
def test_deeply_nested_json_is_an_unexpected_response(dialect: Dialect, status: int) -> None:
    resp = HttpResponse(status, b"[" * 100_000, "application/json")
    req = protocol.get_job_request(dialect, JOB)
    with pytest.raises(VCenterError) as info:  # never RecursionError
        protocol.parse_job(dialect, req, resp)
    assert not info.value.vcenter_messages or "body:" in info.value.vcenter_messages[0]
    assert protocol.is_transient(resp) is (status == 503)


# --------------------------------------------------------------------------------------------------
# The session flow, driven with a scripted transport
# --------------------------------------------------------------------------------------------------
def login_ok(req: HttpRequest) -> HttpResponse:
    if req.target == "/api/session":
        return HttpResponse(201, b'"token-0123456789"', "application/json")
    return HttpResponse(200, b'{"value": "token-0123456789"}', "application/json")


@given(data=st.data(), style=st.sampled_from(["api", "rest", "auto"]))
def test_get_job_through_the_session_yields_a_status_or_our_error(data: st.DataObject, style: str) -> None:
    session = VCenterSession(username="u", password="p4ssword", api_style=style)
    resp = data.draw(responses(Dialect.REST if style == "rest" else Dialect.API))
    sent: list[HttpRequest] = []

    def send(req: HttpRequest) -> HttpResponse:
        sent.append(req)
        assert len(sent) <= 4, "the exchange does not end"
        return login_ok(req) if req.operation == "log in" else resp

    try:
        status = protocol.drive(session.get_job(JOB), send)
    except VCenterError as err:
        check_error(err, JOB)
    else:
        check_status(status, session.dialect or Dialect.API, resp, JOB)
    logins = [r for r in sent if r.operation == "log in"]
    gets = [r for r in sent if r.operation != "log in"]
    assert 1 <= len(logins) <= 2 and 1 <= len(gets) <= 2  # a 401 renews the session once, no more
    assert len(gets) == (2 if resp.status == 401 else 1)
    assert all(r.headers.get(protocol.SESSION_HEADER) == "token-0123456789" for r in gets)


@given(data=st.data(), style=st.sampled_from(["api", "rest", "auto"]))
def test_any_login_answer_opens_a_session_or_raises_our_error(data: st.DataObject, style: str) -> None:
    session = VCenterSession(username="u", password="p4ssword", api_style=style)
    resp = data.draw(responses(Dialect.REST if style == "rest" else Dialect.API))
    error: VCenterError | None = None
    try:
        protocol.drive(session.login(), lambda req: resp)
    except VCenterError as err:  # anything else fails the test
        error = err
    if error is not None:
        assert isinstance(error, (VCenterApiError, VCenterAuthError, VCenterConfigError)), type(error)
        assert not session.is_open
        assert "p4ssword" not in str(error)
    else:
        assert session.is_open and isinstance(session.token, str) and session.token
        assert 200 <= resp.status < 300


# --------------------------------------------------------------------------------------------------
# Trigger events
# --------------------------------------------------------------------------------------------------
@st.composite
def events(draw: st.DrawFn) -> Any:
    job = draw(valid_statuses | mutated_statuses())
    good = {"job_id": draw(st.just(JOB) | texts(max_size=8)), "status": "terminal", "job": job}
    choice = draw(st.sampled_from(["good", "mutated", "error", "timeout", "any"]))
    if choice == "good":
        return good
    if choice == "mutated":
        return {**good, draw(st.sampled_from(["job_id", "status", "job", "x"])): draw(json_values)}
    if choice == "error":
        return {"job_id": JOB, "status": "error", "error": draw(json_values)}
    if choice == "timeout":
        return {"job_id": JOB, "status": "timeout", "message": draw(json_values)}
    return draw(json_values)


@given(event=events())
def test_only_a_well_formed_success_event_succeeds(event: Any) -> None:
    try:
        outcome = event_outcome(JOB, event)
    except AirflowException:
        return
    assert outcome.is_done
    assert event["status"] == "terminal" and event["job_id"] == JOB
    status = BackupJobStatus.from_dict(event["job"])
    assert status.succeeded and status.id == JOB and outcome.xcom_value == status.to_dict()


@given(payload=json_values)
@example(payload={"kind": []})  # was a TypeError (unhashable), found by a derandomized run
@example(payload={"kind": "BackupJobNotFound", "host": ["h"], "job_id": {}, "status_code": True})
def test_any_error_payload_rebuilds_to_our_error(payload: Any) -> None:
    rebuilt = error_from_event(payload)
    assert isinstance(rebuilt, VCenterError)
    assert rebuilt.host is None or isinstance(rebuilt.host, str)
    assert rebuilt.job_id is None or isinstance(rebuilt.job_id, str)
    assert all(isinstance(m, str) for m in rebuilt.vcenter_messages)


# --------------------------------------------------------------------------------------------------
# Every decoder of outside data is total: any JSON value, a typed result or one of our errors
# --------------------------------------------------------------------------------------------------
FIELD_NAMES = ["id", "state", "progress", "messages", "start_time", "end_time", "default_message", "args"]
FIELD_NAMES += ["status", "value", "type", "error_type", "kind", "detail", "host", "job_id", "job", "error"]


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Arrays and objects of ``inner``; objects often keyed by the names our decoders read."""
    keys = st.sampled_from(FIELD_NAMES) | texts(max_size=10)
    return st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=6)


any_json = st.recursive(
    scalars | st.sampled_from([*STATES, "OK", "FAIL", START, "not_found", "FEATURE_IN_USE"]),
    json_containers,
    max_leaves=30,
)
MODEL_DECODERS = {
    "BackupJobStatus.from_json": (BackupJobStatus.from_json, BackupJobStatus),
    "BackupJobStatus.from_dict": (BackupJobStatus.from_dict, BackupJobStatus),
    "CancelResult.from_json": (CancelResult.from_json, CancelResult),
    "LocalizableMessage.from_json": (LocalizableMessage.from_json, LocalizableMessage),
}
RESPONSE_PARSERS: dict[str, tuple[Any, Any]] = {
    "parse_job": (protocol.parse_job, BackupJobStatus),
    "parse_cancel": (protocol.parse_cancel, CancelResult),
    "parse_job_ids": (protocol.parse_job_ids, list),
    "parse_parts": (protocol.parse_parts, list),
    "parse_login": (protocol.parse_login, str),
    "unwrap": (lambda dialect, req, resp: protocol.unwrap(dialect, resp), object),
}


def decoded(name: str, decode: Any, *args: Any) -> Any:
    """``decode(*args)``, or the VCenterError it raised; any other exception fails the test."""
    try:
        result = decode(*args)
    except VCenterError as err:
        event(f"{name}: {type(err).__name__}")
        return err
    event(f"{name}: decoded")
    return result


def json_body(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity included, as Python's json reads them


@given(value=any_json, name=st.sampled_from(sorted(MODEL_DECODERS)))
@example(
    value={"id": "j", "state": "NONE", "progress": 0, "messages": [], "start_time": "2017-02-30"},
    name="BackupJobStatus.from_dict",
)
@example(
    value={"status": "OK", "messages": [{"id": "i", "default_message": "m", "args": [[], {}]}]},
    name="CancelResult.from_json",
)
def test_every_model_decoder_is_total(value: Any, name: str) -> None:
    decode, kind = MODEL_DECODERS[name]
    result = decoded(name, decode, value)
    assert isinstance(result, (kind, VCenterError))
    assert not isinstance(result, VCenterError) or result.detail


@given(value=any_json, status=statuses, dialect=dialects, name=st.sampled_from(sorted(RESPONSE_PARSERS)))
def test_every_response_parser_is_total(value: Any, status: int, dialect: Dialect, name: str) -> None:
    parse_, kind = RESPONSE_PARSERS[name]
    req = protocol.get_job_request(dialect, JOB)
    result = decoded(name, parse_, dialect, req, HttpResponse(status, json_body(value), "application/json"))
    if isinstance(result, VCenterError):
        assert str(result)
    else:
        assert 200 <= status < 300 or name == "unwrap"
        assert isinstance(result, kind)


@given(
    body=any_json.map(json_body) | st.binary(max_size=64),
    status=statuses,
    dialect=dialects,
    operation=st.sampled_from(["log in", "get the backup job", "start a backup"]),
)
def test_any_error_payload_gives_our_error_with_text_messages(
    body: bytes, status: int, dialect: Dialect, operation: str
) -> None:
    resp = HttpResponse(status, body, "application/json")
    name, found = protocol.error_details(resp)
    assert name is None or isinstance(name, str)
    assert isinstance(found, list) and all(isinstance(m, str) for m in found)
    req = HttpRequest("GET", protocol.job_path(dialect, JOB), operation, job_id=JOB)
    err = protocol.error_for(req, resp)
    assert isinstance(err, VCenterError) and str(err)
    assert isinstance(protocol.is_transient(resp), bool)


# --------------------------------------------------------------------------------------------------
# Job ids
# --------------------------------------------------------------------------------------------------
TRICKY = [".", "..", "...", "/", "%", "%2e", "%2E", "%2f", "%2F", "%00", "?", "#", ";", "\\", ":", "~", " "]
TRICKY += ["\x00", "\n", "\u2024", "\uff0e", "\u2215", "\u00e9", "session", "cancel", "job", "a", "-", "_"]
job_ids = st.one_of(
    texts(),
    st.lists(st.sampled_from(TRICKY), max_size=8).map("".join),
    st.from_regex(r"[A-Za-z0-9._:-]{1,130}", fullmatch=True),
)


@functools.cache
def httpx_client() -> httpx.Client:
    return httpx.Client(base_url="https://vcsa.example.com:443")  # builds requests only, sends none


def normalised(path: str) -> str:
    return posixpath.normpath(unquote(path))


def check_target(req: HttpRequest, dialect: Dialect, job_id: str) -> None:
    if req.operation in ("log in", "log out"):
        assert req.target in SESSION_TARGETS
        return
    prefix = JOB_PREFIX[dialect]
    assert req.target.startswith(prefix), req.target
    path = req.target.split("?", 1)[0]
    # the path each client really sends, as the appliance's proxy would resolve it
    sent_by_requests = requests.Request("GET", "https://vcsa.example.com:443" + req.target).prepare()
    sent_by_httpx = httpx_client().build_request("GET", req.target).url
    for candidate in (path, sent_by_requests.path_url.split("?", 1)[0], sent_by_httpx.path):
        resolved = normalised(candidate)
        assert resolved.startswith(prefix), (candidate, resolved)
        assert resolved[len(prefix) :] in (job_id, f"{job_id}/cancel"), (candidate, resolved)


@given(job_id=job_ids, dialect=dialects, operation=st.sampled_from(["get_job", "cancel_job"]))
@example(job_id="..", dialect=Dialect.API, operation="get_job")
@example(job_id="../../session", dialect=Dialect.REST, operation="cancel_job")
@example(job_id="%2e%2e", dialect=Dialect.API, operation="get_job")
@example(job_id="..%2fsession", dialect=Dialect.API, operation="cancel_job")
@example(job_id="a" * 128, dialect=Dialect.REST, operation="get_job")
@example(job_id="a" * 129, dialect=Dialect.REST, operation="get_job")
@example(job_id=JOB, dialect=Dialect.API, operation="cancel_job")
def test_a_job_id_is_refused_before_any_request_or_stays_under_the_job_path(
    job_id: str, dialect: Dialect, operation: str
) -> None:
    session = VCenterSession(username="u", password="p4ssword", api_style=dialect.value)
    sent: list[HttpRequest] = []

    def send(req: HttpRequest) -> HttpResponse:
        sent.append(req)
        if req.operation == "log in":
            return login_ok(req)
        body: Any = {"status": "OK", "messages": []}  # a cancel's answer
        if operation == "get_job":
            body = {"id": job_id, "state": "NONE", "progress": 0, "messages": [], "start_time": START}
        return HttpResponse(200, json.dumps({"value": body} if dialect is Dialect.REST else body).encode())

    refusal = ""
    try:
        protocol.drive(getattr(session, operation)(job_id), send)
    except ValueError as err:
        refusal = str(err)
    if refusal:
        event("refused")
        assert not sent, "a refused job id must not cost a request"
        assert "invalid backup job id" in refusal
        return
    event("sent")
    assert len(sent) == 2
    for req in sent:
        check_target(req, dialect, job_id)


# --------------------------------------------------------------------------------------------------
# The transport core's retry schedule, driven without sockets or clocks
# --------------------------------------------------------------------------------------------------
outcomes = st.lists(
    st.sampled_from(["ok", "unavailable_sent", "unavailable_unsent", "api_error", "not_found"]),
    min_size=1,
    max_size=8,
)
policies = st.builds(
    RetryPolicy,
    attempts=st.integers(1, 6),
    max_seconds=st.just(600.0),
    initial_wait=st.floats(0, 2),
    max_wait=st.floats(0, 5),
)


def scripted_outcome(kind: str) -> HttpResponse | VCenterError:
    if kind == "ok":
        return HttpResponse(200, b"[]", "application/json")
    if kind.startswith("unavailable"):
        return VCenterUnavailableError("down", request_sent=kind.endswith("_sent"))
    return BackupJobNotFound("gone", job_id=JOB) if kind == "not_found" else VCenterApiError("no")


@given(script=outcomes, policy=policies, idempotent=st.booleans())
def test_a_request_is_sent_once_and_retried_only_as_the_policy_says(
    script: list[str], policy: RetryPolicy, idempotent: bool
) -> None:
    from airflow_provider_backupjob.hooks._transport import Send, Sleep, TransportCore
    from airflow_provider_backupjob.settings import ConnectionSettings

    logged: list[str] = []
    log = SimpleNamespace(warning=lambda msg, *args: logged.append(msg % args))
    core = TransportCore("c", policy, log, ())
    core.settings = ConnectionSettings("http://vcsa:80", "vcsa:80", "u", "p4ssword")
    req = HttpRequest("POST", "/api/x", "do it", idempotent=idempotent)

    def exchange(session: Any) -> Any:
        return (yield req)

    run = core.start(VCenterSession(username="u", password="p4ssword"), exchange)
    steps: list[Any] = []
    raised: VCenterError | None = None
    try:
        for step in run:
            steps.append(step)
            sends = sum(isinstance(s, Send) for s in steps)
            assert sends <= policy.attempts, "sent more often than the policy allows"
            if isinstance(step, Send):  # the script's last answer repeats
                run.outcome = scripted_outcome(script[min(sends, len(script)) - 1])
    except VCenterError as err:
        raised = err
    sends = [s for s in steps if isinstance(s, Send)]
    sleeps = [s for s in steps if isinstance(s, Sleep)]
    assert 1 <= len(sends) <= policy.attempts
    # one sleep before each resend, never before the first send or after the last
    assert [type(s) for s in steps] == [Send] + [Sleep, Send] * (len(sends) - 1)
    assert all(0 <= s.seconds <= policy.max_wait + policy.initial_wait for s in sleeps)
    # each retry logged once, with its attempt number and the wait slept
    assert [re.sub(r".*\(attempt (\d+)\); retrying in ([\d.]+) s", r"\1 \2", line) for line in logged] == [
        f"{n} {sleep.seconds:.1f}" for n, sleep in enumerate(sleeps, 1)
    ]
    seen = [scripted_outcome(script[min(n, len(script) - 1)]) for n in range(len(sends))]
    for earlier in seen[:-1]:  # every resend followed a retryable failure
        assert isinstance(earlier, VCenterUnavailableError) and (idempotent or not earlier.request_sent)
    last = seen[-1]
    if isinstance(last, HttpResponse):
        assert raised is None and run.result == last
    else:
        assert raised is not None and type(raised) is type(last) and raised.host == "vcsa:80"
        retryable = isinstance(last, VCenterUnavailableError) and (idempotent or not last.request_sent)
        assert not retryable or len(sends) == policy.attempts
