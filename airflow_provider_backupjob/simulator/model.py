"""Value types of the simulated appliance: messages, vAPI errors, jobs. Pure, no I/O."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Json = Any
Message = dict[str, Any]

JOB_STATES = ("NONE", "INPROGRESS", "SUCCEEDED", "FAILED")
JOB_TYPES = frozenset({"SCHEDULED", "MANUAL"})
# where jobs added without a start request (add_job, the schedule) were written
DEFAULT_LOCATION = "sftp://backup.example.com/vcsa"
DEFAULT_LOCATION_USER = "backup"
BUILD = {"version_name": "8.0.3 GA", "version": "8.0.3.00000", "build_number": "24000000"}
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED"})
OUTCOMES = frozenset(TERMINAL_STATES)
LOCATION_TYPES = frozenset({"FTP", "HTTP", "FTPS", "HTTPS", "SCP", "SFTP", "NFS", "SMB"})

# vAPI standard error name -> HTTP status, as mapped by the appliance.
ERROR_STATUS: dict[str, int] = {
    "invalid_argument": 400,
    "feature_in_use": 400,
    "already_exists": 400,
    "not_allowed_in_current_state": 400,
    "resource_busy": 400,
    "unsupported": 400,
    "unauthenticated": 401,
    "unauthorized": 403,
    "not_found": 404,
    "error": 500,
    "internal_server_error": 500,
    "service_unavailable": 503,
    "timed_out": 504,
}


def message(msg_id: str, default_message: str, args: Iterable[str] = ()) -> Message:
    """A vAPI LocalizableMessage; `default_message` is a template with {0}-style placeholders for args."""
    arg_list = [str(a) for a in args]
    text = default_message.format(*arg_list) if arg_list else default_message
    return {"id": msg_id, "default_message": text, "args": arg_list}


def normalize_message(raw: Mapping[str, Any] | str) -> Message:
    if isinstance(raw, str):
        return message("com.vmware.sim.message", raw)
    return {
        "id": str(raw.get("id", "com.vmware.sim.message")),
        "default_message": str(raw.get("default_message", "")),
        "args": [str(a) for a in raw.get("args", [])],
    }


ADMIN_USER = "administrator@vsphere.local"
AUTH_REQUIRED = message("com.vmware.vapi.endpoint.method.authentication.required", "Authentication required.")
AUTHZ_INVALID = message("vapi.security.authorization.invalid", "Unable to authorize user")
BASIC_CHALLENGE = 'Basic realm="com.vmware.vapi"'


class VapiError(Exception):
    """A vAPI standard error (`com.vmware.vapi.std.errors.<name>`) with its messages."""

    def __init__(self, name: str, messages: Sequence[Message]) -> None:
        super().__init__(f"{name}: {[m['default_message'] for m in messages]}")
        self.name = name
        self.messages = list(messages)

    @property
    def status(self) -> int:
        return ERROR_STATUS.get(self.name, 500)


def unauthenticated() -> VapiError:
    return VapiError("unauthenticated", [AUTH_REQUIRED])


def iso_utc(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds: 2015-01-01T22:13:05.651Z."""
    t = dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def job_type(value: Any) -> str:
    text = str(value).upper()
    if text not in JOB_TYPES:
        raise ValueError(f"job_type must be SCHEDULED or MANUAL, not {value!r}")
    return text


def new_job_id(epoch: float, rng: random.Random) -> str:
    """A timestamp-based id like 20170717-132629-5318154."""
    t = dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)
    return t.strftime("%Y%m%d-%H%M%S") + f"-{rng.randrange(1_000_000, 10_000_000)}"


@dataclass(frozen=True)
class JobScript:
    """How a job progresses: `none_polls` NONE answers, `inprogress_polls` INPROGRESS, then `outcome`."""

    outcome: str = "SUCCEEDED"
    none_polls: int = 0
    inprogress_polls: int = 3
    end_time_null: bool = False

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be SUCCEEDED or FAILED, not {self.outcome!r}")
        if self.none_polls < 0 or self.inprogress_polls < 0:
            raise ValueError("poll counts must be >= 0")


@dataclass
class Job:
    id: str
    script: JobScript
    start_epoch: float
    terminal_messages: list[Message] | None = None
    request: dict[str, Any] | None = None
    job_type: str = "MANUAL"
    # a job that runs by the clock (the schedule's): INPROGRESS for run_seconds, then its outcome
    run_seconds: float | None = None
    polls: int = 0
    gets: int = 0
    end_epoch: float | None = None
    canceled: bool = False
    cancel_progress: int = 0

    def _progress_at(self, n: int) -> int:
        s = self.script
        k = n - s.none_polls
        if k <= 0:
            return 0
        k = min(k, s.inprogress_polls)
        return max(1, min(99, k * 100 // (s.inprogress_polls + 1)))

    def state_at(self, n: int, now: float | None = None) -> tuple[str, int]:
        """State and progress of the answer to poll number `n` (0: before any poll); a job that runs
        by the clock answers by `now` instead."""
        if self.canceled:
            return "FAILED", self.cancel_progress
        s = self.script
        if self.run_seconds is not None and now is not None:
            elapsed = now - self.start_epoch
            if elapsed < self.run_seconds:
                return "INPROGRESS", max(1, min(99, int(elapsed * 100 / self.run_seconds)))
            return (s.outcome, 100) if s.outcome == "SUCCEEDED" else (s.outcome, 99)
        if n <= s.none_polls and s.none_polls:
            return "NONE", 0
        if n <= s.none_polls + s.inprogress_polls and (n or s.inprogress_polls):
            return "INPROGRESS", self._progress_at(n)
        if s.outcome == "SUCCEEDED":
            return "SUCCEEDED", 100
        return "FAILED", self._progress_at(s.none_polls + s.inprogress_polls)

    def state_now(self, now: float | None = None) -> str:
        """The state the last answer reported (the initial state if never polled)."""
        return self.state_at(self.polls, now)[0]

    @property
    def state(self) -> str:
        return self.state_now(time.time() if self.run_seconds is not None else None)

    def terminal_at(self, now: float) -> bool:
        return self.state_now(now) in TERMINAL_STATES

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def status(self, now: float) -> dict[str, Any]:
        """BackupJobStatus as of the last poll (does not count a poll)."""
        state, progress = self.state_at(self.polls, now)
        if state in TERMINAL_STATES and self.end_epoch is None:
            end = now if self.run_seconds is None else self.start_epoch + self.run_seconds
            self.end_epoch = max(end, self.start_epoch)
        if self.canceled:
            msgs = [message("com.vmware.applmgmt.backup.job.canceled", "Backup job was canceled.")]
        elif state == "FAILED":
            msgs = (
                self.terminal_messages
                if self.terminal_messages is not None
                else [
                    message(
                        "com.vmware.applmgmt.backup.job.failed",
                        "Backup job failed: simulated failure while writing to the backup location.",
                        [self.id],
                    )
                ]
            )
        elif state == "SUCCEEDED":
            msgs = self.terminal_messages if self.terminal_messages is not None else []
        else:
            msgs = []
        body: dict[str, Any] = {
            "id": self.id,
            "state": state,
            "messages": [dict(m) for m in msgs],
            "progress": progress,
            "start_time": iso_utc(self.start_epoch),
        }
        if state in TERMINAL_STATES and self.end_epoch is not None:
            body["end_time"] = iso_utc(self.end_epoch)
        elif self.script.end_time_null:
            body["end_time"] = None
        return body

    def poll(self, now: float) -> dict[str, Any]:
        """Count one GET of this job and answer its status."""
        self.gets += 1
        self._count_poll(now)
        return self.status(now)

    def _count_poll(self, now: float) -> None:
        if not self.terminal_at(now):
            self.polls += 1

    def cancel(self, now: float) -> None:
        self.cancel_progress = self.state_at(self.polls, now)[1]
        self.canceled = True
        self.end_epoch = max(now, self.start_epoch)

    def details(self, now: float) -> dict[str, Any]:
        """Job ``Details.Info`` (6.7+) as the vendor's spec has it, as of the last poll (reading
        details counts no poll: a watcher reading them does not move other clients' jobs on)."""
        st = self.status(now)
        status = {"NONE": "PENDING", "INPROGRESS": "RUNNING"}.get(st["state"], st["state"])
        req = self.request or {}
        info: dict[str, Any] = {
            "description": message("com.vmware.applmgmt.backup.job.description", "Backup job"),
            "service": "com.vmware.appliance.recovery.backup.job",
            "operation": "create",
            "status": status,
            "cancelable": st["state"] not in TERMINAL_STATES,
            "progress": {
                "total": 100,
                "completed": st["progress"],
                "message": message(
                    "com.vmware.applmgmt.backup.job.progress", "Backup progress {0}%", [str(st["progress"])]
                ),
            },
            "type": self.job_type,
            "location": str(req.get("location") or DEFAULT_LOCATION),
            "location_user": str(req.get("location_user") or DEFAULT_LOCATION_USER),
            "messages": st["messages"],
            "user": ADMIN_USER if self.job_type == "MANUAL" else None,
            "build": dict(BUILD),
            "fast_backup": bool(req.get("fast_backup", False)),
        }
        if info["user"] is None:
            del info["user"]  # unset: the system started it
        if status != "PENDING":
            info["start_time"] = st["start_time"]
            end = self.end_epoch if st.get("end_time") is not None and self.end_epoch is not None else now
            info["duration"] = int(max(0.0, end - self.start_epoch))
            # a deterministic size that grows with progress: 40 MiB for a full backup
            info["size"] = st["progress"] * 40 * 1024 * 1024 // 100
        if st.get("end_time") is not None:
            info["end_time"] = st["end_time"]
        if st["state"] == "FAILED" and st["messages"]:
            info["error"] = st["messages"][0]  # an object on real appliances (a string in the spec)
        return info


PARTS: list[dict[str, Any]] = [
    {
        "id": "common",
        "name": message("com.vmware.applmgmt.backup.parts.common", "Inventory and configuration"),
        "description": message(
            "com.vmware.applmgmt.backup.parts.common.description",
            "Inventory and configuration of the vCenter Server. This part is always included.",
        ),
        "selected_by_default": True,
        "optional": False,
    },
    {
        "id": "seat",
        "name": message("com.vmware.applmgmt.backup.parts.seat", "Stats, Events, and Tasks"),
        "description": message(
            "com.vmware.applmgmt.backup.parts.seat.description",
            "Historical data: statistics, events and tasks.",
        ),
        "selected_by_default": True,
        "optional": True,
    },
]
PART_IDS = frozenset(p["id"] for p in PARTS)


def _invalid(text: str, *args: str) -> VapiError:
    return VapiError("invalid_argument", [message("com.vmware.applmgmt.backup.invalid_argument", text, args)])


def validate_backup_request(piece: Any) -> dict[str, Any]:
    """Check a BackupRequest as the appliance does; raises invalid_argument."""
    if not isinstance(piece, dict):
        raise _invalid("The backup request is missing or is not a structure.")
    parts = piece.get("parts")
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise _invalid("Required field parts is missing or is not a list of part ids.")
    unknown = [p for p in parts if p not in PART_IDS]
    if unknown:
        raise _invalid("Unknown backup part(s): {0}", ", ".join(unknown))
    if piece.get("location_type") not in LOCATION_TYPES:
        raise _invalid("Invalid location_type {0}.", str(piece.get("location_type")))
    if not isinstance(piece.get("location"), str) or not piece["location"]:
        raise _invalid("Required field location is missing or is not a string.")
    for key in ("location_user", "location_password", "backup_password", "comment"):
        if piece.get(key) is not None and not isinstance(piece[key], str):
            raise _invalid("Field {0} must be a string.", key)
    pw = piece.get("backup_password")
    if pw is not None and not 8 <= len(pw) <= 20:
        raise _invalid("The backup password must be 8 to 20 characters long.")
    return dict(piece)
