"""The appliance's backup-job API as a sans-IO protocol: no sockets, no HTTP client, no Airflow.

This module holds every fact about the wire: the paths of both dialects (``/api`` and ``/rest``),
how requests are built, how answers become typed models or exceptions, which failures are transient,
and the session flow (log in once, send the token, log in again once on a 401, fall back from
``/api`` to ``/rest`` on appliances before 7.0 U2, log out). The flow is written as generators
that *yield* an :class:`HttpRequest` and are *sent* the :class:`HttpResponse`; a transport drives
them: both hooks through their shared transport core (``hooks/_transport.py``), over ``requests``
and ``httpx``; tests with :func:`drive`. The protocol knows nothing of them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlencode

from airflow_provider_backupjob.exceptions import (
    BackupAlreadyRunning,
    BackupJobNotFound,
    UnexpectedResponseError,
    VCenterApiError,
    VCenterAuthError,
    VCenterConfigError,
    VCenterError,
    VCenterUnavailableError,
)
from airflow_provider_backupjob.models import (
    BackupJobDetails,
    BackupJobStatus,
    BackupRequest,
    CancelResult,
    JobType,
    LocalizableMessage,
)

T = TypeVar("T")

SESSION_HEADER = "vmware-api-session-id"
TRANSIENT_STATUSES = frozenset({502, 503, 504})
SESSION_CAP_MESSAGE_ID = "com.vmware.vapi.endpoint.failedToLoginMaxUserSessionCountReached"
PRIVILEGE_HINT = "the user needs the SystemConfiguration.Administrators group"

_JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Dialect(str, Enum):
    """The two URL dialects of the vSphere Automation API."""

    API = "api"  # vCenter 7.0 U2 and later: bare bodies, ``error_type`` errors, 201 on login
    REST = "rest"  # vCenter 6.5 and later: ``{"value": ...}`` bodies, ``type`` errors


API_STYLES = ("auto", "api", "rest")


def validate_job_id(job_id: object) -> str:
    """Return ``job_id`` if it is a safe path segment, else raise ``ValueError`` naming it.

    A job id is a non-empty string of letters, digits, ``-``, ``_``, ``.`` and ``:``, at most 128
    characters, and not made of dots alone (``..`` would climb out of ``.../backup/job/``).
    """
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id) or set(job_id) == {"."}:
        raise VCenterConfigError(
            f"invalid backup job id {job_id!r:.200}: expected 1 to 128 letters, digits, '-', '_', '.' "
            "or ':' (for example '20170717-132629-5318154')"
        )
    return job_id


# --------------------------------------------------------------------------------------------------
# Requests and responses
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpRequest:
    """One request, ready for any HTTP client. Headers and body stay out of ``repr`` (secrets)."""

    method: str
    target: str  # path and query, e.g. "/api/appliance/recovery/backup/job/ID"
    operation: str  # in words, for error messages: "log in", "get the backup job", ...
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    json_body: Any = field(default=None, repr=False)
    # False where sending twice could do the work twice (starting a backup): such a request is only
    # retried when it surely never left this machine.
    idempotent: bool = True
    job_id: str | None = None

    def with_headers(self, extra: dict[str, str]) -> HttpRequest:
        return replace(self, headers={**self.headers, **extra})


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = ""


def _base(dialect: Dialect) -> str:
    return "/api/appliance/recovery/backup" if dialect is Dialect.API else "/rest/appliance/recovery/backup"


def job_path(dialect: Dialect, job_id: str | None = None) -> str:
    path = f"{_base(dialect)}/job"
    return f"{path}/{validate_job_id(job_id)}" if job_id is not None else path


def login_request(dialect: Dialect, username: str, password: str) -> HttpRequest:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    target = "/api/session" if dialect is Dialect.API else "/rest/com/vmware/cis/session"
    return HttpRequest(
        "POST",
        target,
        "log in",
        headers={"Authorization": f"Basic {token}", "vmware-use-header-authn": "true"},
    )


def logout_request(dialect: Dialect) -> HttpRequest:
    target = "/api/session" if dialect is Dialect.API else "/rest/com/vmware/cis/session"
    return HttpRequest("DELETE", target, "log out")


def get_job_request(dialect: Dialect, job_id: str) -> HttpRequest:
    return HttpRequest("GET", job_path(dialect, job_id), "get the backup job", job_id=job_id)


def list_jobs_request(dialect: Dialect) -> HttpRequest:
    return HttpRequest("GET", job_path(dialect), "list backup jobs")


def details_request(dialect: Dialect, job_ids: Sequence[str] | None = None) -> HttpRequest:
    """``GET .../job/details``, filtered by ids: ``jobs=`` on /api, ``filter.jobs=`` on /rest."""
    target = f"{job_path(dialect)}/details"
    if job_ids is not None:
        key = "jobs" if dialect is Dialect.API else "filter.jobs"
        target += "?" + urlencode([(key, validate_job_id(j)) for j in job_ids])
    return HttpRequest("GET", target, "get backup job details")


def list_parts_request(dialect: Dialect) -> HttpRequest:
    return HttpRequest("GET", f"{_base(dialect)}/parts", "list backup parts")


def start_backup_request(dialect: Dialect, request: BackupRequest) -> HttpRequest:
    body = request.to_json() if dialect is Dialect.API else {"piece": request.to_json()}
    return HttpRequest("POST", job_path(dialect), "start a backup", json_body=body, idempotent=False)


def cancel_job_request(dialect: Dialect, job_id: str) -> HttpRequest:
    path = job_path(dialect, job_id)
    target = f"{path}?action=cancel" if dialect is Dialect.API else f"{path}/cancel"
    # Cancelling twice is harmless: the second answers not_allowed_in_current_state.
    return HttpRequest("POST", target, "cancel the backup job", job_id=job_id)


# --------------------------------------------------------------------------------------------------
# Responses into models or exceptions
# --------------------------------------------------------------------------------------------------
def _snippet(body: bytes) -> str:
    text = body[:120].decode("utf-8", "replace")
    return " ".join(text.split()) + ("..." if len(body) > 120 else "")


def decode_json(resp: HttpResponse) -> Any:
    try:
        return json.loads(resp.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise UnexpectedResponseError(
            f"unexpected response from vCenter: HTTP {resp.status} with a body that is not JSON "
            f"({resp.content_type or 'no content type'}): {_snippet(resp.body)!r}"
        ) from None


def unwrap(dialect: Dialect, resp: HttpResponse) -> Any:
    """The payload of a successful answer: ``{"value": X}`` on /rest, bare ``X`` on /api."""
    body = decode_json(resp)
    if dialect is Dialect.REST:
        if not isinstance(body, dict) or "value" not in body:
            raise UnexpectedResponseError("unexpected response from vCenter: a /rest answer without 'value'")
        return body["value"]
    return body


def error_details(resp: HttpResponse) -> tuple[str | None, list[str]]:
    """vCenter's error name (``not_found``) and messages from an error body of either dialect."""
    try:
        body = json.loads(resp.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, []
    if not isinstance(body, dict):
        return None, []
    name: str | None = None
    raw_messages: Any = []
    if isinstance(body.get("type"), str):  # /rest
        name = body["type"].rsplit(".", 1)[-1]
        value = body.get("value")
        raw_messages = value.get("messages", []) if isinstance(value, dict) else []
    else:  # /api; error_type may be missing
        if isinstance(body.get("error_type"), str):
            name = body["error_type"].lower()
        raw_messages = body.get("messages", [])
    messages: list[str] = []
    for raw in raw_messages if isinstance(raw_messages, list) else []:
        try:
            message = LocalizableMessage.from_json(raw)
        except VCenterError:
            continue
        messages.append(f"{message.default_message} [{message.id}]")
    return name, messages


def _message_ids(resp: HttpResponse) -> list[str]:
    return [m.rsplit("[", 1)[-1].rstrip("]") for m in error_details(resp)[1]]


def is_session_cap(resp: HttpResponse) -> bool:
    return resp.status == 503 and SESSION_CAP_MESSAGE_ID in _message_ids(resp)


def is_transient(resp: HttpResponse) -> bool:
    """502/503/504 are retried, whatever their body, except the 503 of a login at the session cap."""
    return resp.status in TRANSIENT_STATUSES and not is_session_cap(resp)


def error_for(req: HttpRequest, resp: HttpResponse) -> VCenterError:
    """The exception for a non-2xx answer to ``req``."""
    name, messages = error_details(resp)
    kw: dict[str, Any] = {"job_id": req.job_id, "status_code": resp.status, "vcenter_messages": messages}
    status = resp.status
    if req.operation == "log in":
        if status == 404 and req.target == "/api/session":  # only with api_style "api": auto falls back
            return VCenterConfigError(
                "the appliance has no /api (vCenter before 7.0 U2 answers 404 there): set the connection "
                "extra api_style to auto or rest",
                **kw,
            )
        if status == 401:
            return VCenterAuthError("vCenter rejected the user name or password at login", **kw)
        if is_session_cap(resp):
            return VCenterAuthError(
                "vCenter refused the login: the user has reached the appliance's session cap. Sessions "
                "left open by other clients expire after the idle timeout (or free them by restarting "
                "the vAPI endpoint); check for scripts that log in without logging out",
                **kw,
            )
    if status == 401:
        # Only sent after a fresh login was accepted and the request was refused again: the
        # credentials are good, so this is vCenter's session service misbehaving, worth a retry.
        return VCenterApiError(
            f"vCenter did not accept a fresh session to {req.operation} (HTTP 401 right after a login)", **kw
        )
    if status == 403:
        return VCenterAuthError(f"the user is not allowed to {req.operation}: {PRIVILEGE_HINT}", **kw)
    if status == 404 and req.job_id is not None:
        return BackupJobNotFound("the backup job does not exist on this vCenter", **kw)
    if status == 400 and name == "feature_in_use":
        return BackupAlreadyRunning("a backup or restore is already in progress on the appliance", **kw)
    if status in TRANSIENT_STATUSES:
        return VCenterUnavailableError(f"vCenter is unavailable; could not {req.operation}", **kw)
    if not messages and not name:
        kw["vcenter_messages"] = [f"body: {_snippet(resp.body)}"] if resp.body else []
    what = f" ({name})" if name else ""
    return VCenterApiError(f"vCenter answered an error{what} to the request to {req.operation}", **kw)


def check(req: HttpRequest, resp: HttpResponse) -> HttpResponse:
    if not 200 <= resp.status < 300:
        raise error_for(req, resp)
    return resp


def _with_job(req: HttpRequest, parse: Callable[[], T]) -> T:
    try:
        return parse()
    except VCenterError as err:
        raise err.with_context(job_id=req.job_id) from err.__cause__


def parse_login(dialect: Dialect, req: HttpRequest, resp: HttpResponse) -> str:
    token = unwrap(dialect, check(req, resp))
    if not isinstance(token, str) or not token:
        raise UnexpectedResponseError("unexpected response from vCenter: the login returned no session token")
    return token


def parse_job(dialect: Dialect, req: HttpRequest, resp: HttpResponse) -> BackupJobStatus:
    return _with_job(req, lambda: BackupJobStatus.from_json(unwrap(dialect, check(req, resp))))


def parse_job_ids(dialect: Dialect, req: HttpRequest, resp: HttpResponse) -> list[str]:
    ids = unwrap(dialect, check(req, resp))
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise UnexpectedResponseError("unexpected response from vCenter: the job list is not a list of ids")
    return ids


def parse_details(dialect: Dialect, req: HttpRequest, resp: HttpResponse) -> dict[str, BackupJobDetails]:
    """The details answer: an object keyed by job id on /api, a list of ``{key, value}`` on /rest."""
    if resp.status == 404:
        raise VCenterApiError(
            "this appliance has no backup job details (HTTP 404 on .../backup/job/details: vCenter 6.5 "
            "has none; they came with 6.7)",
            status_code=404,
        )
    body = unwrap(dialect, check(req, resp))
    if dialect is Dialect.REST:
        if not isinstance(body, list) or not all(
            isinstance(e, dict) and isinstance(e.get("key"), str) and "value" in e for e in body
        ):
            raise UnexpectedResponseError(
                "unexpected response from vCenter: the /rest job details are not a list of {key, value}"
            )
        pairs = [(e["key"], e["value"]) for e in body]
    else:
        if not isinstance(body, dict):
            raise UnexpectedResponseError(
                "unexpected response from vCenter: the job details are not an object"
            )
        pairs = list(body.items())
    return {validate_job_id(k): BackupJobDetails.from_json(k, v) for k, v in pairs}


def _details_or_none(
    dialect: Dialect, req: HttpRequest, resp: HttpResponse
) -> dict[str, BackupJobDetails] | None:
    """None where the appliance has no details (404: vCenter 6.5)."""
    return None if resp.status == 404 else parse_details(dialect, req, resp)


def parse_parts(dialect: Dialect, req: HttpRequest, resp: HttpResponse) -> list[str]:
    parts = unwrap(dialect, check(req, resp))
    if not isinstance(parts, list) or not all(
        isinstance(p, dict) and isinstance(p.get("id"), str) for p in parts
    ):
        raise UnexpectedResponseError("unexpected response from vCenter: the part list is malformed")
    return [p["id"] for p in parts]


def parse_cancel(dialect: Dialect, req: HttpRequest, resp: HttpResponse) -> CancelResult:
    return _with_job(req, lambda: CancelResult.from_json(unwrap(dialect, check(req, resp))))


# --------------------------------------------------------------------------------------------------
# Finding a job by start time and type
# --------------------------------------------------------------------------------------------------
# Job ids are timestamp based ("TimeStamp based ID", 20170717-132629-5318154, per the vendor's page).
# Which clock the stamp uses is not documented, so a window on the id is widened by the largest UTC
# offset there is; the job's own start_time decides. Ids sort by their stamp as strings.
_ID_STAMP = re.compile(r"(\d{8})-(\d{6})(?!\d)")
ID_CLOCK_SLACK = dt.timedelta(hours=14)
FIND_BATCH = 20  # ids a details request asks for (a URL well under 1 kB)
FIND_MAX_BATCHES = 3  # details requests of one find_job call, at most
FALLBACK_GETS = 8  # job GETs of one find_job call on an appliance without details
_FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.timezone.utc)


def job_id_time(job_id: str) -> dt.datetime | None:
    """The time stamp at the start of a job id (naive, clock unknown), or None if it has none."""
    match = _ID_STAMP.match(job_id)
    if not match:
        return None
    try:
        return dt.datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")
    except ValueError:
        return None


def _naive_utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        return when
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def candidate_ids(
    ids: Iterable[str], started_after: dt.datetime, started_before: dt.datetime | None
) -> list[str] | None:
    """Ids that may have started in the window, newest first; None if some id has no time stamp
    (then nothing can be ruled out by its id)."""
    low = _naive_utc(started_after) - ID_CLOCK_SLACK
    high = None if started_before is None else _naive_utc(started_before) + ID_CLOCK_SLACK
    picked: list[str] = []
    for job_id in ids:
        stamp = job_id_time(job_id)
        if stamp is None:
            return None
        if stamp >= low and (high is None or stamp < high):
            picked.append(job_id)
    return sorted(picked, reverse=True)


def in_window(
    status: BackupJobStatus, started_after: dt.datetime, started_before: dt.datetime | None
) -> bool:
    start = status.start_time
    return start is not None and start >= started_after and (started_before is None or start < started_before)


def _aware(when: dt.datetime, name: str) -> dt.datetime:
    if not isinstance(when, dt.datetime):
        raise VCenterConfigError(f"{name} must be a datetime, not {type(when).__name__}")
    if when.tzinfo is None:
        raise VCenterConfigError(f"{name} must carry a time zone (vCenter's start times are UTC): {when}")
    return when


# --------------------------------------------------------------------------------------------------
# The session flow
# --------------------------------------------------------------------------------------------------
Exchange = Generator[HttpRequest, HttpResponse, T]


class VCenterSession:
    """Session state of one client of one appliance: dialect in use, token, credentials.

    Every public method is an exchange (a generator of requests) to be driven by a transport.
    The token and password never appear in ``repr`` or in any message.
    """

    def __init__(self, *, username: str, password: str, api_style: str = "auto") -> None:
        if api_style not in API_STYLES:
            raise VCenterConfigError(f"api_style must be one of {', '.join(API_STYLES)}, not {api_style!r}")
        self._username = username
        self._password = password
        self.dialect: Dialect | None = None if api_style == "auto" else Dialect(api_style)
        self._token: str | None = None
        self.logins = 0

    def __repr__(self) -> str:
        state = "open" if self._token else "closed"
        return f"VCenterSession(user={self._username!r}, dialect={self.dialect}, {state})"

    @classmethod
    def resumed(cls, token: str, dialect: Dialect) -> VCenterSession:
        """A session on a token issued before, without credentials (it cannot log in again): what a
        transport logs out once more when a logout was cut short before its answer, since
        :meth:`logout` forgets the token as it sends."""
        session = cls(username="", password="", api_style=dialect.value)
        session._token = token
        return session

    @property
    def is_open(self) -> bool:
        return self._token is not None

    @property
    def token(self) -> str | None:
        """The session token, for a transport to mask in its logs; never log it."""
        return self._token

    def login(self) -> Exchange[None]:
        # "auto" tries /api first and remembers the answer for the session object's life.
        candidates = [self.dialect] if self.dialect else [Dialect.API, Dialect.REST]
        for dialect in candidates:
            req = login_request(dialect, self._username, self._password)
            resp = yield req
            if self.dialect is None and dialect is Dialect.API and resp.status == 404:
                continue  # an appliance before 7.0 U2: no /api at all
            self._token = parse_login(dialect, req, resp)
            self.dialect = dialect
            self.logins += 1
            return
        raise VCenterApiError(
            "the appliance answered 404 to the login on both /api and /rest: is this the address of a "
            "vCenter Server Appliance?",
            status_code=404,
        )

    def _authed(self, req: HttpRequest) -> HttpRequest:
        assert self._token is not None
        return req.with_headers({SESSION_HEADER: self._token})

    def call(
        self,
        build: Callable[[Dialect], HttpRequest],
        parse: Callable[[Dialect, HttpRequest, HttpResponse], T],
    ) -> Exchange[T]:
        """Log in if needed, send, and on a 401 (expired session) log in again once and resend."""
        if self._token is None:
            yield from self.login()
        assert self.dialect is not None
        req = build(self.dialect)
        resp = yield self._authed(req)
        if resp.status == 401:
            self._token = None  # the appliance no longer knows it: nothing left to log out
            yield from self.login()
            resp = yield self._authed(req)
        return parse(self.dialect, req, resp)

    def logout(self) -> Exchange[bool]:
        """Log out if a session is open; True when the appliance confirmed it (401: already gone)."""
        if self._token is None or self.dialect is None:
            return False
        req = self._authed(logout_request(self.dialect))
        self._token = None  # forget it whatever happens: a token is never used after a logout attempt
        resp = yield req
        return 200 <= resp.status < 300 or resp.status == 401

    # The operations ---------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Exchange[BackupJobStatus]:
        validate_job_id(job_id)
        return (yield from self.call(lambda d: get_job_request(d, job_id), parse_job))

    def list_jobs(self) -> Exchange[list[str]]:
        return (yield from self.call(list_jobs_request, parse_job_ids))

    def list_parts(self) -> Exchange[list[str]]:
        return (yield from self.call(list_parts_request, parse_parts))

    def cancel_job(self, job_id: str) -> Exchange[CancelResult]:
        validate_job_id(job_id)
        return (yield from self.call(lambda d: cancel_job_request(d, job_id), parse_cancel))

    def list_job_details(self, job_ids: Sequence[str] | None = None) -> Exchange[dict[str, BackupJobDetails]]:
        """Details of the given jobs (all the appliance keeps if None); raises on vCenter 6.5."""
        ids = None if job_ids is None else [validate_job_id(j) for j in job_ids]
        return (yield from self.call(lambda d: details_request(d, ids), parse_details))

    def job_statuses(
        self, job_ids: Sequence[str], *, need_type: bool = False
    ) -> Exchange[list[BackupJobStatus]]:
        """The statuses of ``job_ids``, with details where the appliance has them: one details
        request, or on an appliance without details (vCenter 6.5 answers 404) one GET per job,
        skipping jobs that vanished meanwhile. ``need_type``: fail clearly where the type is
        unknowable. Jobs not started yet (no start time) are left out."""
        statuses, _ = yield from self._statuses(job_ids, need_type=need_type)
        return statuses

    def _statuses(
        self,
        job_ids: Sequence[str],
        *,
        need_type: bool,
        stop_below: dt.datetime | None = None,
        max_gets: int | None = None,
    ) -> Exchange[tuple[list[BackupJobStatus], bool]]:
        if not job_ids:
            return [], True
        ids = [validate_job_id(j) for j in job_ids]
        details = yield from self.call(lambda d: details_request(d, ids), _details_or_none)
        if details is not None:
            return [info.to_status() for info in details.values() if info.start_time is not None], True
        if need_type:
            raise VCenterConfigError(
                "job_type cannot be used with this appliance: it has no backup job details (HTTP 404 on "
                ".../backup/job/details, as on vCenter 6.5), so whether a job was SCHEDULED or MANUAL "
                "cannot be known. Leave job_type unset (None)."
            )
        found: list[BackupJobStatus] = []
        for job_id in ids[:max_gets]:
            try:
                status = yield from self.get_job(job_id)
            except BackupJobNotFound:
                continue
            found.append(status)
            if stop_below is not None and status.start_time is not None and status.start_time < stop_below:
                break  # ids are newest first: this one decides (in the window, or every later one is too old)
        return found, False

    def find_job(
        self,
        *,
        started_after: dt.datetime,
        started_before: dt.datetime | None = None,
        job_type: JobType | str | None = None,
    ) -> Exchange[BackupJobStatus | None]:
        """The newest job that started in ``[started_after, started_before)`` and is of ``job_type``.

        One list request; the ids' time stamps rule out the jobs that cannot be in the window; then
        details of at most FIND_MAX_BATCHES batches of FIND_BATCH ids, newest first. On an appliance
        without details: one 404, then job GETs newest first, up to the first that started before
        ``started_before`` (it decides), at most FALLBACK_GETS. A call costs at
        most 2 + FIND_MAX_BATCHES requests (2 + FALLBACK_GETS on vCenter 6.5), however many jobs the
        appliance keeps, plus one GET of the job chosen by its details (the state it answers is the
        one the job's own endpoint gives).
        """
        after = _aware(started_after, "started_after")
        before = None if started_before is None else _aware(started_before, "started_before")
        if before is not None and before <= after:
            raise VCenterConfigError(f"started_before ({before}) must be later than started_after ({after})")
        kind = JobType.parse(job_type)
        ids = yield from self.list_jobs()
        candidates = candidate_ids(ids, after, before)
        if candidates is None:  # some ids carry no time stamp: one unfiltered details request decides
            details = yield from self.call(lambda d: details_request(d), _details_or_none)
            if details is None:
                raise VCenterApiError(
                    "cannot find a job by start time on this appliance: its job ids carry no time stamp "
                    "and it has no job details (vCenter 6.5); give the sensor a job_id instead"
                )
            statuses = [i.to_status() for i in details.values() if i.start_time]
            return (yield from self._confirmed(_newest_match(statuses, after, before, kind)))
        for first in range(0, min(len(candidates), FIND_BATCH * FIND_MAX_BATCHES), FIND_BATCH):
            batch = candidates[first : first + FIND_BATCH]
            statuses, had_details = yield from self._statuses(
                batch,
                need_type=kind is not None,
                stop_below=before or _FAR_FUTURE,
                max_gets=FALLBACK_GETS,
            )
            found = _newest_match(statuses, after, before, kind)
            if found is not None and had_details:
                return (yield from self._confirmed(found))
            if found is not None or not had_details:  # vCenter 6.5: the GETs were the last word
                return found
        return None

    def _confirmed(self, found: BackupJobStatus | None) -> Exchange[BackupJobStatus | None]:
        """The job the details chose, in the state its own endpoint answers, with the details."""
        if found is None:
            return None
        status = yield from self.get_job(found.id)
        return replace(status, details=found.details)

    def start_backup(self, request: BackupRequest, *, look_back: int = 5) -> Exchange[BackupJobStatus]:
        """Start a backup; on ``feature_in_use`` name the running job when the job list tells it."""
        try:
            return (yield from self.call(lambda d: start_backup_request(d, request), parse_job))
        except BackupAlreadyRunning as refused:
            running = yield from self._find_running_job(look_back)
            if running is not None:
                refused.detail += f"; the running backup job is {running}"
                refused.with_context(job_id=running)
            raise

    def _find_running_job(self, look_back: int) -> Exchange[str | None]:
        try:
            ids = yield from self.list_jobs()
            for job_id in sorted(ids, reverse=True)[:look_back]:  # ids are timestamps: newest first
                status = yield from self.get_job(job_id)
                if not status.is_terminal:
                    return job_id
        except (VCenterError, ValueError):
            return None  # best effort: the refusal itself is what the caller needs
        return None


def _newest_match(
    statuses: Iterable[BackupJobStatus],
    after: dt.datetime,
    before: dt.datetime | None,
    kind: JobType | None,
) -> BackupJobStatus | None:
    matches = [
        st
        for st in statuses
        if in_window(st, after, before)
        and (kind is None or (st.details is not None and st.details.type is kind))
    ]
    return max(matches, key=lambda st: (st.start_time, st.id), default=None)


class SessionExpired(Exception):
    """A :class:`BorrowedSession`'s token was refused (401): its holder must log in again.

    Carries nothing: the holder knows which token it lent.
    """


class BorrowedSession(VCenterSession):
    """A session whose token is lent by a holder shared by many clients (the triggerer's shared
    sessions): it never logs in or out itself. Where :class:`VCenterSession` would log in again
    (a 401), it raises :class:`SessionExpired` so that the holder makes one login for all.
    """

    def __init__(self, token: str, dialect: Dialect) -> None:
        super().__init__(username="", password="", api_style=dialect.value)
        self._token = token

    def __repr__(self) -> str:
        return f"BorrowedSession(dialect={self.dialect}, {'open' if self._token else 'expired'})"

    def login(self) -> Exchange[None]:
        raise SessionExpired()
        yield  # pragma: no cover - makes this a generator like the method it replaces

    def logout(self) -> Exchange[bool]:
        return False  # the holder logs out when its last user is gone
        yield  # pragma: no cover


def drive(exchange: Exchange[T], send: Callable[[HttpRequest], HttpResponse]) -> T:
    """Run an exchange with a synchronous transport."""
    try:
        req = next(exchange)
        while True:
            req = exchange.send(send(req))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        exchange.close()
