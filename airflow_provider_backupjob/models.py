"""Typed models of what the appliance returns, parsed strictly.

Parsing fails closed: a body with a missing required field, a wrong type or an unknown state raises
:class:`~airflow_provider_backupjob.exceptions.UnexpectedResponseError` (a ``VCenterApiError``), so
nothing but a well-formed ``SUCCEEDED`` ever reads as success.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import pendulum
from pendulum import DateTime

from airflow_provider_backupjob.exceptions import UnexpectedResponseError, VCenterConfigError


class BackupJobState(str, Enum):
    """The states of ``BackupJobStatus.state`` (the vendor's ``BackupRestoreProcessState``)."""

    FAILED = "FAILED"
    INPROGRESS = "INPROGRESS"
    NONE = "NONE"
    SUCCEEDED = "SUCCEEDED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({BackupJobState.FAILED, BackupJobState.SUCCEEDED})


def _unexpected(what: str) -> UnexpectedResponseError:
    return UnexpectedResponseError(f"unexpected response from vCenter: {what}")


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise _unexpected(f"{where} has no '{key}'")
    value = obj[key]
    # bool is an int in Python; vCenter never sends a boolean where a number or string belongs.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _unexpected(f"{where} field '{key}' has the wrong type ({type(value).__name__})")
    return value


def parse_time(value: Any, where: str) -> DateTime:
    """Parse vCenter's ISO 8601 UTC timestamps (``2015-01-01T22:13:05.651Z``)."""
    if not isinstance(value, str):
        raise _unexpected(f"{where} is not a timestamp string")
    try:
        parsed = pendulum.parse(value, strict=True)
    except (ValueError, TypeError) as err:  # pendulum raises ParserError, a ValueError
        raise _unexpected(f"{where} is not an ISO 8601 timestamp: {value!r:.64}") from err
    if not isinstance(parsed, DateTime):
        raise _unexpected(f"{where} is not a date and time: {value!r:.64}")
    return parsed


@dataclass(frozen=True)
class LocalizableMessage:
    """A vAPI ``LocalizableMessage``: an id in a message bundle, English text and its arguments."""

    id: str
    default_message: str
    args: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> LocalizableMessage:
        if not isinstance(obj, dict):
            raise _unexpected("a message is not an object")
        args = obj.get("args", [])
        if not isinstance(args, list):
            raise _unexpected("message field 'args' is not a list")
        return cls(
            id=_require(obj, "id", str, "message"),
            default_message=_require(obj, "default_message", str, "message"),
            args=tuple(str(a) for a in args),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "default_message": self.default_message, "args": list(self.args)}

    def __str__(self) -> str:
        return self.default_message or self.id


def parse_messages(value: Any, where: str) -> list[LocalizableMessage]:
    if not isinstance(value, list):
        raise _unexpected(f"{where} field 'messages' is not a list")
    return [LocalizableMessage.from_json(m) for m in value]


@dataclass(frozen=True)
class BackupJobStatus:
    """``BackupJobStatus``: what ``GET .../recovery/backup/job/{id}`` returns."""

    id: str
    state: BackupJobState
    progress: int
    messages: list[LocalizableMessage] = field(default_factory=list)
    start_time: DateTime | None = None
    end_time: DateTime | None = None
    # the job's details (6.7+), when it was read from the details call: type, size, duration, location
    details: BackupJobDetails | None = field(default=None, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @property
    def succeeded(self) -> bool:
        return self.state is BackupJobState.SUCCEEDED

    @property
    def progress_text(self) -> str:
        """The one log line a poll writes, e.g. ``Backup job X is INPROGRESS, 40% done``."""
        return f"Backup job {self.id} is {self.state.value}, {self.progress}% done"

    @property
    def message_text(self) -> str:
        return "; ".join(str(m) for m in self.messages)

    @classmethod
    def from_json(cls, obj: Any) -> BackupJobStatus:
        where = "BackupJobStatus"
        if not isinstance(obj, dict):
            raise _unexpected(f"{where} is not a JSON object")
        raw_state = _require(obj, "state", str, where)
        try:
            state = BackupJobState(raw_state)
        except ValueError:
            raise _unexpected(f"unknown backup job state {raw_state!r:.40}") from None
        end_raw = obj.get("end_time")
        return cls(
            id=_require(obj, "id", str, where),
            state=state,
            progress=_require(obj, "progress", int, where),
            messages=parse_messages(_require(obj, "messages", list, where), where),
            start_time=parse_time(_require(obj, "start_time", str, where), "start_time"),
            end_time=None if end_raw is None else parse_time(end_raw, "end_time"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for XCom and trigger events; :meth:`from_dict` reads it back.

        With details it also carries ``type``, ``size``, ``duration`` and ``location``.
        """
        result: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "progress": self.progress,
            "messages": [m.to_dict() for m in self.messages],
            "start_time": self.start_time.isoformat() if self.start_time else None,
            "end_time": self.end_time.isoformat() if self.end_time else None,
        }
        if self.details is not None:
            result.update(self.details.summary())
        return result

    @classmethod
    def from_dict(cls, data: Any) -> BackupJobStatus:
        """Read :meth:`to_dict`'s output back, as strictly as a vCenter body."""
        if not isinstance(data, dict):
            raise _unexpected("job status is not an object")
        obj = dict(data)
        if obj.get("start_time") is None:
            raise _unexpected("job status has no start_time")
        return cls.from_json(obj)


@dataclass(frozen=True)
class BackupRequest:
    """The body of a backup start (``BackupRequest``). Secrets are left out of ``repr``."""

    parts: list[str]
    location_type: str
    location: str
    location_user: str | None = None
    location_password: str | None = field(default=None, repr=False)
    backup_password: str | None = field(default=None, repr=False)
    comment: str | None = None
    fast_backup: bool | None = None

    LOCATION_TYPES = ("FTP", "HTTP", "FTPS", "HTTPS", "SCP", "SFTP", "NFS", "SMB")

    def __post_init__(self) -> None:
        if not self.parts or not all(isinstance(p, str) and p for p in self.parts):
            raise VCenterConfigError("parts must be a non-empty list of part ids, e.g. ['common']")
        if self.location_type not in self.LOCATION_TYPES:
            raise VCenterConfigError(
                f"location_type must be one of {', '.join(self.LOCATION_TYPES)}, not {self.location_type!r}"
            )
        if not self.location:
            raise VCenterConfigError("location (the URL of the backup folder) is required")
        if self.backup_password is not None and not 8 <= len(self.backup_password) <= 20:
            raise VCenterConfigError("backup_password must be 8 to 20 characters long")

    @classmethod
    def of(cls, request: BackupRequest | None = None, **fields: Any) -> BackupRequest:
        """``request``, or one made of its fields as keyword arguments; ``location_type`` defaults
        to the location URL's scheme (``sftp://...`` is SFTP)."""
        if request is not None:
            if fields or not isinstance(request, BackupRequest):
                raise VCenterConfigError("pass either a BackupRequest or its fields as keyword arguments")
            return request
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise VCenterConfigError(
                f"unknown backup request field(s) {', '.join(unknown)}; the fields are "
                + ", ".join(cls.__dataclass_fields__)
            )
        if not fields.get("location_type") and isinstance(fields.get("location"), str):
            fields["location_type"] = urlsplit(fields["location"]).scheme.upper()
        if isinstance(fields.get("parts"), str):  # one part id, not its characters
            fields["parts"] = [fields["parts"]]
        fields.setdefault("parts", None)
        fields.setdefault("location", "")
        fields.setdefault("location_type", "")
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "parts": list(self.parts),
            "location_type": self.location_type,
            "location": self.location,
        }
        for key in ("location_user", "location_password", "backup_password", "comment", "fast_backup"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body


@dataclass(frozen=True)
class CancelResult:
    """What a cancel returns: ``status`` OK, WARNING or FAIL, and vCenter's messages."""

    status: str
    messages: list[LocalizableMessage]

    @classmethod
    def from_json(cls, obj: Any) -> CancelResult:
        if not isinstance(obj, dict):
            raise _unexpected("cancel result is not an object")
        status = _require(obj, "status", str, "cancel result")
        if status not in ("OK", "WARNING", "FAIL"):
            raise _unexpected(f"unknown cancel status {status!r:.40}")
        return cls(status=status, messages=parse_messages(obj.get("messages", []), "cancel result"))


# --------------------------------------------------------------------------------------------------
# Job details (``Details.Info``, vCenter 6.7 and later)
# --------------------------------------------------------------------------------------------------
class JobType(str, Enum):
    """``Details.Type``: whether vCenter's scheduler or a person started the job."""

    SCHEDULED = "SCHEDULED"
    MANUAL = "MANUAL"

    @classmethod
    def parse(cls, value: object) -> JobType | None:
        """A user's ``job_type`` argument (None, a JobType or its name) or a clear config error."""
        if value is None or isinstance(value, JobType):
            return value
        try:
            return cls(str(value).upper())
        except ValueError:
            raise VCenterConfigError(
                f"job_type must be SCHEDULED, MANUAL or None, not {value!r:.40}"
            ) from None


class DetailsStatus(str, Enum):
    """``CisTaskStatus``, the ``status`` of job details."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    BLOCKED = "BLOCKED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def job_state(self) -> BackupJobState:
        """The ``BackupJobStatus.state`` this status means; BLOCKED is still running, not an end."""
        return _STATE_OF[self]


_STATE_OF = {
    DetailsStatus.PENDING: BackupJobState.NONE,
    DetailsStatus.RUNNING: BackupJobState.INPROGRESS,
    DetailsStatus.BLOCKED: BackupJobState.INPROGRESS,
    DetailsStatus.SUCCEEDED: BackupJobState.SUCCEEDED,
    DetailsStatus.FAILED: BackupJobState.FAILED,
}


def _optional(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if obj.get(key) is None:
        return None
    return _require(obj, key, kind, where)


def _enum(enum: type[Any], value: str, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise _unexpected(f"unknown {what} {value!r:.40}") from None


@dataclass(frozen=True)
class BackupJobDetails:
    """``Details.Info`` of one job, from ``GET .../backup/job/details``.

    Required by the vendor's spec (and so by this parser): ``status``, ``type``, ``messages``,
    ``cancelable``, ``location``; the rest may be absent. ``error`` is an object on real appliances
    and a string in the generated spec: both are read, as text.
    """

    id: str
    status: DetailsStatus
    type: JobType
    cancelable: bool
    location: str
    messages: list[LocalizableMessage] = field(default_factory=list)
    location_user: str | None = None
    user: str | None = None
    start_time: DateTime | None = None
    end_time: DateTime | None = None
    duration: int | None = None
    size: int | None = None
    progress_total: int | None = None
    progress_completed: int | None = None
    error: str | None = None

    @property
    def state(self) -> BackupJobState:
        return self.status.job_state

    @property
    def percent(self) -> int:
        """Progress as a percentage (0-100), from ``progress.completed`` of ``progress.total``."""
        if self.status is DetailsStatus.SUCCEEDED:
            return 100
        if not self.progress_total or self.progress_completed is None:
            return 0
        return max(0, min(100, self.progress_completed * 100 // self.progress_total))

    @classmethod
    def from_json(cls, job_id: str, obj: Any) -> BackupJobDetails:
        where = f"the details of job {job_id}"
        if not isinstance(obj, dict):
            raise _unexpected(f"{where} are not a JSON object")
        progress = _optional(obj, "progress", dict, where) or {}
        total = _optional(progress, "total", int, f"{where} progress")
        completed = _optional(progress, "completed", int, f"{where} progress")
        start, end = obj.get("start_time"), obj.get("end_time")
        return cls(
            id=job_id,
            status=_enum(DetailsStatus, _require(obj, "status", str, where), "job details status"),
            type=_enum(JobType, _require(obj, "type", str, where), "backup job type"),
            cancelable=_flag(obj, "cancelable", where),
            location=_require(obj, "location", str, where),
            messages=parse_messages(_require(obj, "messages", list, where), where),
            location_user=_optional(obj, "location_user", str, where),
            user=_optional(obj, "user", str, where),
            start_time=None if start is None else parse_time(start, f"{where} start_time"),
            end_time=None if end is None else parse_time(end, f"{where} end_time"),
            duration=_optional(obj, "duration", int, where),
            size=_optional(obj, "size", int, where),
            progress_total=total,
            progress_completed=completed,
            error=_error_text(obj.get("error"), where),
        )

    def to_status(self) -> BackupJobStatus:
        """The ``BackupJobStatus`` these details say, carrying them; a job not started yet has no
        start time and cannot be one (fails closed)."""
        if self.start_time is None:
            raise _unexpected(f"the details of job {self.id} have no start_time")
        messages = list(self.messages)
        if self.state is BackupJobState.FAILED and self.error and not messages:
            messages = [LocalizableMessage("com.vmware.applmgmt.backup.job.error", self.error)]
        return BackupJobStatus(
            id=self.id,
            state=self.state,
            progress=self.percent,
            messages=messages,
            start_time=self.start_time,
            end_time=self.end_time,
            details=self,
        )

    def summary(self) -> dict[str, Any]:
        """The details a task's XCom and an asset event carry (JSON-safe)."""
        return {
            "type": self.type.value,
            "size": self.size,
            "duration": self.duration,
            "location": self.location,
        }


def _flag(obj: dict[str, Any], key: str, where: str) -> bool:
    if key not in obj:
        raise _unexpected(f"{where} has no '{key}'")
    if not isinstance(obj[key], bool):
        raise _unexpected(f"{where} field '{key}' has the wrong type ({type(obj[key]).__name__})")
    return bool(obj[key])


def _error_text(value: Any, where: str) -> str | None:
    """``error`` as text: a LocalizableMessage-like object on appliances, a string in the spec."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("default_message", "message", "id"):
            if isinstance(value.get(key), str):
                return str(value[key])
        messages = value.get("messages")
        if isinstance(messages, list) and messages:
            return "; ".join(str(LocalizableMessage.from_json(m)) for m in messages)
        return json.dumps(value, sort_keys=True)[:200]
    raise _unexpected(f"{where} field 'error' has the wrong type ({type(value).__name__})")
