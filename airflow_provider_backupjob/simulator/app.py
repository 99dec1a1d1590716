"""Request routing for both API dialects and the /_sim/ control surface. Pure: no I/O.

The transport (server.py) calls `App.begin` once a request is read (counting it and picking a fault),
applies transport-level faults (drop, slow, reset), then calls `App.respond` for the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import control
from .faults import Fault
from .model import BASIC_CHALLENGE, PARTS, VapiError, message
from .state import SimState

SESSION_HEADER = "vmware-api-session-id"
CONTROL_PREFIX = "/_sim/"
JSON_TYPE = "application/json"

_HTML_TITLES = {
    404: "404 Not Found",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}
_HTML_FAULTS = {"http_503_html": 503, "http_502_html": 502, "http_504_html": 504}
_JSON_FAULTS = {
    "http_503_json": (
        "service_unavailable",
        "com.vmware.vapi.endpoint.serviceUnavailable",
        "Service is temporarily unavailable.",
    ),
    "http_500_json": ("error", "com.vmware.vapi.std.errors.error", "An internal error occurred (simulated)."),
    "not_found": (
        "not_found",
        "com.vmware.vapi.std.errors.not_found",
        "The requested resource was not found (simulated).",
    ),
}
_TRUNCATED = {"rest": b'{"value": {"id": "', "api": b'{"id": "'}


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    tls: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = parts.path or "/"
        self.query: dict[str, list[str]] = parse_qs(parts.query, keep_blank_values=True)

    @property
    def dialect(self) -> str:
        for d in ("rest", "api"):
            if self.path == "/" + d or self.path.startswith(f"/{d}/"):
                return d
        return "other"

    def token(self) -> str | None:
        tok = self.headers.get(SESSION_HEADER)
        if tok:
            return tok.strip()
        for item in self.headers.get("cookie", "").split(";"):
            name, _, value = item.strip().partition("=")
            if name == SESSION_HEADER and value:
                return value.strip().strip('"')
        return None


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def json_response(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("content-type", JSON_TYPE), *(headers or [])], json.dumps(obj).encode())


def html_response(status: int) -> Response:
    title = _HTML_TITLES.get(status, f"{status} Error")
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return Response(status, [("content-type", "text/html")], page.encode())


def vapi_error(dialect: str, err: VapiError) -> Response:
    """The error body in the request's dialect."""
    if dialect == "api":
        body: dict[str, Any] = {"error_type": err.name.upper(), "messages": err.messages}
        headers: list[tuple[str, str]] = []
        if err.name == "unauthenticated":
            body["challenge"] = BASIC_CHALLENGE
            headers.append(("www-authenticate", BASIC_CHALLENGE))
        return json_response(err.status, body, headers)
    return json_response(
        err.status, {"type": f"com.vmware.vapi.std.errors.{err.name}", "value": {"messages": err.messages}}
    )


def _ok(dialect: str, value: Any, *, created: bool = False) -> Response:
    if dialect == "api":
        return json_response(201 if created else 200, value)
    return json_response(200, {"value": value})


def _json_body(req: Request) -> Any:
    if not req.body.strip():
        return None
    try:
        return json.loads(req.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VapiError(
            "invalid_argument",
            [
                message(
                    "vapi.bindings.typeconverter.fromjson.invalid.json",
                    "Invalid JSON in request body: {0}",
                    [str(exc)],
                )
            ],
        ) from exc


Handler = Callable[[], Response]
_JOB_RE = re.compile(r"^/appliance/recovery/backup/job/([^/]+)(/cancel)?$")


class App:
    def __init__(self, state: SimState) -> None:
        self.state = state

    # ---- entry points used by the transport -----------------------------------------------------
    def begin(self, req: Request) -> Fault | None:
        """Count a non-control request and pick the fault it suffers, if any."""
        if req.path.startswith(CONTROL_PREFIX):
            return None
        route, _ = self._resolve(req)
        self.state.count_request(route, req.dialect)
        login_or_logout = route in ("POST session", "DELETE session")
        return self.state.take_fault(req.method, req.target, is_login_or_logout=login_or_logout)

    def respond(self, req: Request, fault: Fault | None = None) -> Response:
        if req.path.startswith(CONTROL_PREFIX):
            return self._control(req)
        dialect = req.dialect
        if fault is not None:
            if fault.kind in _HTML_FAULTS:
                return html_response(_HTML_FAULTS[fault.kind])
            if fault.kind in _JSON_FAULTS:
                name, msg_id, text = _JSON_FAULTS[fault.kind]
                return vapi_error(dialect, VapiError(name, [message(msg_id, text)]))
            if fault.kind == "malformed_json":
                return Response(200, [("content-type", JSON_TYPE)], _TRUNCATED.get(dialect, b'{"value": "'))
            if fault.kind == "expire_session":
                self.state.expire_session(req.token())
        if dialect == "other" or (dialect == "api" and not self.state.api_enabled):
            return html_response(404)
        _, handler = self._resolve(req)
        if handler is None:
            text = "Cannot find service or operation for {0} {1}."
            msg = message("vapi.method.input.invalid.interface", text, [req.method, req.path])
            return vapi_error(dialect, VapiError("not_found", [msg]))
        try:
            return handler()
        except VapiError as err:
            return vapi_error(dialect, err)

    # ---- routing --------------------------------------------------------------------------------
    def _resolve(self, req: Request) -> tuple[str, Handler | None]:
        d, m = req.dialect, req.method.upper()
        if d == "other":
            return "other", None
        p = req.path[len(d) + 1 :]
        if (d == "rest" and p == "/com/vmware/cis/session") or (d == "api" and p == "/session"):
            info = (m == "POST" and req.query.get("~action") == ["get"]) if d == "rest" else m == "GET"
            if info:
                return "GET session", lambda: _ok(d, self.state.session_info(req.token()))
            if m == "POST":
                return "POST session", lambda: self._login(req)
            if m == "DELETE":
                return "DELETE session", lambda: self._logout(req)
            return "other", None
        if p == "/appliance/recovery/backup/parts" and m == "GET":
            return "GET parts", self._priv(req, lambda: _ok(d, PARTS))
        if p == "/appliance/recovery/backup/job":
            if m == "GET":
                return "GET jobs", self._priv(req, lambda: _ok(d, self.state.list_jobs()))
            if m == "POST" and not req.query:
                return "POST job", self._priv(req, lambda: self._start(req))
            return "other", None
        if p == "/appliance/recovery/backup/job/details" and m == "GET":
            return "GET details", self._priv(req, lambda: self._details(req))
        match = _JOB_RE.match(p)
        if match:
            job_id, cancel = unquote(match.group(1)), bool(match.group(2))
            if m == "GET" and not cancel:
                return "GET job", self._priv(req, lambda: _ok(d, self.state.get_job(job_id)))
            rest_cancel = d == "rest" and cancel
            api_cancel = d == "api" and not cancel and req.query.get("action") == ["cancel"]
            if m == "POST" and (rest_cancel or api_cancel):
                return "POST cancel", self._priv(req, lambda: _ok(d, self.state.cancel_job(job_id)))
        return "other", None

    def _priv(self, req: Request, inner: Handler) -> Handler:
        def handler() -> Response:
            self.state.authenticate(req.token(), privileged=True)
            return inner()

        return handler

    def _login(self, req: Request) -> Response:
        token = self.state.login(req.headers.get("authorization"))
        headers: list[tuple[str, str]] = []
        if req.headers.get("vmware-use-header-authn", "").strip().lower() != "true":
            cookie = f"{SESSION_HEADER}={token}; Path=/; HttpOnly" + ("; Secure" if req.tls else "")
            headers.append(("set-cookie", cookie))
        if req.dialect == "api":
            return json_response(201, token, headers)
        return json_response(200, {"value": token}, headers)

    def _logout(self, req: Request) -> Response:
        self.state.logout(req.token())
        if req.dialect == "api":
            return Response(204)
        return Response(200)

    def _start(self, req: Request) -> Response:
        body = _json_body(req)
        if req.dialect == "rest":
            if not isinstance(body, dict) or "piece" not in body:
                text = "Required field piece is missing from the request."
                raise VapiError("invalid_argument", [message("vapi.method.input.invalid", text)])
            body = body["piece"]
        return _ok(req.dialect, self.state.start_backup(body), created=True)

    def _details(self, req: Request) -> Response:
        key = "filter.jobs" if req.dialect == "rest" else "jobs"
        ids = req.query.get(key)
        info = self.state.job_details(ids)
        if req.dialect == "api":
            return json_response(200, info)
        return json_response(200, {"value": [{"key": k, "value": v} for k, v in info.items()]})

    # ---- /_sim/ control surface -----------------------------------------------------------------
    def _control(self, req: Request) -> Response:
        try:
            body = json.loads(req.body) if req.body.strip() else {}
            if not isinstance(body, dict):
                raise TypeError("the request body must be a JSON object")
            return json_response(200, self._control_call(req.method.upper(), req.path, body))
        except LookupError as exc:
            return json_response(404, {"error": str(exc)})
        except (TypeError, ValueError) as exc:
            return json_response(400, {"error": f"{type(exc).__name__}: {exc}"})

    def _control_call(self, m: str, path: str, body: dict[str, Any]) -> Any:
        sub = path[len(CONTROL_PREFIX) :].strip("/")
        return control.answer(self.state, m, sub, body)
