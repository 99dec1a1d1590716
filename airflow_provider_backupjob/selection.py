"""Which backup job a task waits for when it has no job id: a start-time window and a job type.

Shared by the sensor (poke and reschedule mode) and the trigger (deferrable mode). Pure: no I/O,
no Airflow.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from airflow_provider_backupjob.exceptions import VCenterConfigError
from airflow_provider_backupjob.models import BackupJobStatus, JobType
from airflow_provider_backupjob.protocol import in_window


def parse_when(value: Any, name: str) -> dt.datetime:
    """A window bound: an aware datetime or an ISO 8601 string with an offset, as
    ``{{ data_interval_end }}`` renders."""
    when: Any = value
    if isinstance(value, str):
        text = value.strip()
        try:  # fromisoformat keeps a string without an offset naive (pendulum would assume UTC)
            when = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError as err:
            raise VCenterConfigError(
                f"{name} must be a datetime or an ISO 8601 string such as '2026-01-01T22:00:00+00:00', "
                f"not {value!r:.80}"
            ) from err
    if not isinstance(when, dt.datetime):
        raise VCenterConfigError(f"{name} must be a datetime or an ISO 8601 string, not {value!r:.80}")
    if when.tzinfo is None:
        raise VCenterConfigError(
            f"{name} has no time zone ({value!r:.80}): give one, e.g. '+00:00' (vCenter's times are UTC)"
        )
    return when


@dataclass(frozen=True)
class JobSelector:
    """The newest job started in ``[started_after, started_before)`` of ``job_type``."""

    started_after: dt.datetime
    started_before: dt.datetime | None = None
    job_type: JobType | None = None

    @classmethod
    def parse(cls, started_after: Any, started_before: Any = None, job_type: Any = None) -> JobSelector:
        after = parse_when(started_after, "started_after")
        before = None if started_before in (None, "") else parse_when(started_before, "started_before")
        if before is not None and before <= after:
            raise VCenterConfigError(f"started_before ({before}) must be later than started_after ({after})")
        return cls(after, before, JobType.parse(job_type or None))

    def to_kwargs(self) -> dict[str, str | None]:
        """JSON primitives for trigger kwargs (ISO 8601 strings)."""
        return {
            "started_after": self.started_after.isoformat(),
            "started_before": None if self.started_before is None else self.started_before.isoformat(),
            "job_type": None if self.job_type is None else self.job_type.value,
        }

    def find_kwargs(self) -> dict[str, Any]:
        return {
            "started_after": self.started_after,
            "started_before": self.started_before,
            "job_type": self.job_type,
        }

    @property
    def description(self) -> str:
        """``SCHEDULED backup job started after 2026-01-01T22:00:00+00:00``."""
        kind = f"{self.job_type.value} " if self.job_type else ""
        text = f"{kind}backup job started after {self.started_after.isoformat()}"
        if self.started_before is not None:
            text += f" and before {self.started_before.isoformat()}"
        return text

    @property
    def waiting_text(self) -> str:
        return f"no {self.description} yet"

    def chosen_text(self, status: BackupJobStatus) -> str:
        kind = status.details.type.value if status.details else "type unknown"
        start = status.start_time.isoformat() if status.start_time else "?"
        return f"Chose backup job {status.id} ({kind}, started {start}), the newest {self.description}"

    def matches(self, status: BackupJobStatus, job_type: Any = None) -> bool:
        """Whether a status is one this selector may choose; ``job_type``: the type a status dict
        (a trigger event's) carried, where the status itself has no details."""
        if not in_window(status, self.started_after, self.started_before):
            return False
        seen = status.details.type.value if status.details is not None else job_type
        return self.job_type is None or seen == self.job_type.value
