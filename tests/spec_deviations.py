"""Where real appliances (and this project's contract) differ from the vendor's spec: the ONE list.

The contract tests (tests/test_contract.py, through tests/spec_contract.py) validate requests and
simulator bodies against ``../shared/spec/vmware-rest-8.0.2/backup-api.json``. That file is the
vendor's own generated spec, left as the source has it; its README lists where real appliances
are known to differ from it. Each such difference is one entry below, with its reason, where it
is applied, and an example that shows it is still needed: ``admit`` entries widen the spec to
what appliances really send (the unpatched spec rejects the example, the patched one accepts it);
``tighten`` entries narrow it to what appliances do in practice (the unpatched spec accepts the
example, the patched one rejects it). The patches act on an in-memory copy of the loaded
document, never on the file, and each one fails loudly when the spec no longer has what it
patches (a deviation the vendor fixed must be removed here, not silently skipped).

Nothing else in the tests may loosen what the spec says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Spec = dict[str, Any]

API_ERRORS = {
    401: "VapiStdErrorsUnauthenticated",
    403: "VapiStdErrorsError",
    503: "VapiStdErrorsServiceUnavailable",
}
REST_ERRORS = {
    401: "vapi.std.errors.unauthenticated_error",
    403: "vapi.std.errors.error_error",
    503: "vapi.std.errors.service_unavailable_error",
}
JOB_STATUS = ("ApplianceRecoveryBackupJobBackupJobStatus", "appliance.recovery.backup.job.backup_job_status")
DETAILS_INFO = ("ApplianceRecoveryBackupJobDetailsInfo", "appliance.recovery.backup.job.details.info")
API_CANCEL = ("post", "/api/appliance/recovery/backup/job/{id}")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def definition(spec: Spec, name: str) -> dict[str, Any]:
    found: dict[str, Any] = spec["definitions"][name]  # KeyError: the spec lost it
    return found


def operation(spec: Spec, method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = spec["paths"][path][method]
    return found


def backup_operations(spec: Spec) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(dialect, path, operation) of every appliance (non-session) operation."""
    for path, item in spec["paths"].items():
        for dialect in ("api", "rest"):
            if path.startswith(f"/{dialect}/appliance/"):
                for method in _METHODS:
                    if method in item:
                        yield dialect, path, item[method]


def _declare(responses: dict[str, Any], status: int, schema: dict[str, str]) -> None:
    if str(status) in responses:
        raise AssertionError(f"the spec now declares HTTP {status}: drop or revise this deviation")
    responses[str(status)] = {"description": "added by tests/spec_deviations.py", "schema": schema}


# ---- the patches ---------------------------------------------------------------------------------
def _end_time_nullable(spec: Spec) -> None:
    for name in JOB_STATUS:
        prop = definition(spec, name)["properties"]["end_time"]
        assert prop["type"] == "string", prop
        prop["type"] = ["string", "null"]


def _details_error_object(spec: Spec) -> None:
    for name in DETAILS_INFO:
        prop = definition(spec, name)["properties"]["error"]
        assert prop["type"] == "string", prop
        prop["type"] = ["string", "object"]


def _auth_and_unavailable_errors(spec: Spec) -> None:
    for dialect, _, op in backup_operations(spec):
        for status, name in (API_ERRORS if dialect == "api" else REST_ERRORS).items():
            _declare(op["responses"], status, _ref(name))


def _rest_generic_error_500(spec: Spec) -> None:
    for dialect, _, op in backup_operations(spec):
        if dialect == "rest":
            assert op["responses"]["400"]["schema"] == _ref("vapi.std.errors.error_error"), op["responses"]
            _declare(op["responses"], 500, _ref("vapi.std.errors.error_error"))


def _api_cancel_400(spec: Spec) -> None:
    _declare(operation(spec, *API_CANCEL)["responses"], 400, _ref("VapiStdErrorsError"))


def _api_session_security(spec: Spec) -> None:
    for method, scheme in (("post", "basic_auth"), ("get", "session_id"), ("delete", "session_id")):
        op = operation(spec, method, "/api/session")
        assert "security" not in op, op.get("security")
        op["security"] = [{scheme: []}]


def _progress_range(spec: Spec) -> None:
    for name in JOB_STATUS:
        prop = definition(spec, name)["properties"]["progress"]
        assert prop["type"] == "integer" and "maximum" not in prop, prop
        prop.update(minimum=0, maximum=100)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _no_undeclared_fields(spec: Spec) -> None:
    for node in _walk(spec):
        props = node.get("properties")
        if isinstance(props, dict) and "additionalProperties" not in node:
            for name in node.get("required", []):
                props.setdefault(name, {})  # required but never described (Part, DetailsInfo)
            node["additionalProperties"] = False


# ---- the list ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """A response the deviation decides: (method, path as sent, HTTP status, JSON body)."""

    method: str
    path: str
    status: int
    body: Any


@dataclass(frozen=True)
class Deviation:
    key: str
    kind: str  # "admit": widen to what appliances send; "tighten": narrow to what they do
    reason: str
    applied_to: str
    patch: Callable[[Spec], None]
    example: Example | None = None  # None: a request-side deviation, tested in test_contract.py


_STATUS = {"id": "20170717-132629-5318154", "state": "INPROGRESS", "messages": [], "progress": 40}
_START = "2015-01-01T22:13:05.651Z"
_MSG = {"id": "com.vmware.applmgmt.backup.job.failed", "default_message": "Backup job failed.", "args": []}
_API_JOB = "/api/appliance/recovery/backup/job/20170717-132629-5318154"

DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "end_time_nullable",
        "admit",
        "BackupJobStatus.end_time is a plain string in the spec (no x-nullable), but appliances send "
        "null while a job runs (README 'Where real appliances differ'; vcenter-backup-api.md)",
        "definitions " + ", ".join(JOB_STATUS) + ": end_time type string or null",
        _end_time_nullable,
        Example("GET", _API_JOB, 200, {**_STATUS, "start_time": _START, "end_time": None}),
    ),
    Deviation(
        "details_error_object",
        "admit",
        "job-details Info.error is a string in the spec, an object in the vendor's reference and on "
        "real appliances (README)",
        "definitions " + ", ".join(DETAILS_INFO) + ": error type string or object",
        _details_error_object,
        Example(
            "GET",
            "/api/appliance/recovery/backup/job/details",
            200,
            {
                "20170717-132629-5318154": {
                    "location": "sftp://10.0.0.5/backups",
                    "location_user": "",
                    "type": "MANUAL",
                    "messages": [],
                    "description": _MSG,
                    "service": "com.vmware.applmgmt.backup.job",
                    "operation": "backup",
                    "status": "FAILED",
                    "cancelable": False,
                    "error": {"messages": [_MSG]},
                }
            },
        ),
    ),
    Deviation(
        "auth_and_unavailable_errors",
        "admit",
        "the spec declares no 401, 403 or 503 on the backup operations, yet every one of them answers "
        "401 unauthenticated (no or expired session), 403 unauthorized (user not in "
        "SystemConfiguration.Administrators) and 503 service_unavailable (services restarting) "
        "(README; vcenter-backup-api.md status table)",
        "every /api/appliance and /rest/appliance operation: 401, 403, 503 with the dialect's "
        "unauthenticated, generic and service_unavailable error schemas",
        _auth_and_unavailable_errors,
        Example(
            "GET",
            _API_JOB,
            401,
            {
                "error_type": "UNAUTHENTICATED",
                "messages": [_MSG],
                "challenge": 'Basic realm="com.vmware.vapi"',
            },
        ),
    ),
    Deviation(
        "rest_generic_error_500",
        "admit",
        "/rest operations list the generic error under HTTP 400; the vendor's /rest pages (and "
        "appliances) answer it with 500 (README)",
        "every /rest/appliance operation: 500 with vapi.std.errors.error_error",
        _rest_generic_error_500,
        Example(
            "GET",
            "/rest/appliance/recovery/backup/job",
            500,
            {"type": "com.vmware.vapi.std.errors.error", "value": {"messages": [_MSG]}},
        ),
    ),
    Deviation(
        "api_cancel_400",
        "admit",
        "the /api cancel declares no 400, but cancelling a job that is not running answers 400 "
        "not_allowed_in_current_state (vcenter-backup-api.md status table; the /rest cancel declares 400)",
        "POST /api/appliance/recovery/backup/job/{id} (action=cancel): 400 with VapiStdErrorsError",
        _api_cancel_400,
        Example(
            "POST",
            _API_JOB + "?action=cancel",
            400,
            {"error_type": "NOT_ALLOWED_IN_CURRENT_STATE", "messages": [_MSG]},
        ),
    ),
    Deviation(
        "api_session_security",
        "tighten",
        "POST /api/session declares no security, but the vendor's page requires the basic "
        "Authorization header (README); GET and DELETE /api/session likewise need the session "
        "token (vcenter-backup-api.md: every call after login carries vmware-api-session-id)",
        "POST /api/session: security basic_auth; GET and DELETE /api/session: security session_id",
        _api_session_security,
    ),
    Deviation(
        "progress_range",
        "tighten",
        "BackupJobStatus.progress has no declared range; it is a percentage, 0-100 in practice (README)",
        "definitions " + ", ".join(JOB_STATUS) + ": progress minimum 0, maximum 100",
        _progress_range,
        Example("GET", _API_JOB, 200, {**_STATUS, "progress": 140, "start_time": _START}),
    ),
    Deviation(
        "no_undeclared_fields",
        "tighten",
        "the spec's objects leave additional fields open; a field the spec does not declare is "
        "something the simulator (or our request) invented, so the contract rejects it. Names the "
        "spec requires but never describes (Part and DetailsInfo 'description') count as declared",
        "every schema object with 'properties' in the document: additionalProperties false",
        _no_undeclared_fields,
        Example("GET", _API_JOB, 200, {**_STATUS, "start_time": _START, "percent": 40}),
    ),
)


def apply(spec: Spec, deviations: tuple[Deviation, ...] = DEVIATIONS) -> Spec:
    """Patch ``spec`` (a private copy) in place with every deviation, in order; returns it."""
    for deviation in deviations:
        deviation.patch(spec)
    return spec
