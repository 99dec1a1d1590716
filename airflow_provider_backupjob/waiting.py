"""What the operators that wait share: duration arguments, and a hook made on first use whose
retries fit within one poll.

The outcome table is :mod:`airflow_provider_backupjob.outcome`; the rules of a wait (outage,
deadline, pauses) are :mod:`airflow_provider_backupjob.outage`.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from airflow_provider_backupjob.retry import RetryPolicy

if TYPE_CHECKING:
    from airflow_provider_backupjob.hooks.backup_job import BackupJobHook


def seconds(value: timedelta | float, name: str) -> float:
    """A duration argument (timedelta or seconds) as non-negative seconds."""
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if result < 0:
        raise ValueError(f"{name} must not be negative")
    return result


class OwnsBackupJobHook:
    """For operators that poll: a hook made on first use (never at parse time) and closed (logged
    out) by ``_close_hook``, with the retries ``_retry_policy`` gives (by default within one poll)."""

    vcenter_conn_id: str

    def _poll_interval(self) -> float:
        raise NotImplementedError

    def _retry_policy(self) -> RetryPolicy:
        return poll_retry_policy(self._poll_interval())

    @cached_property
    def hook(self) -> BackupJobHook:
        from airflow_provider_backupjob.hooks.backup_job import BackupJobHook

        return BackupJobHook(self.vcenter_conn_id, retry_policy=self._retry_policy())

    def _close_hook(self) -> None:
        if "hook" in self.__dict__:
            self.hook.close()
            del self.__dict__["hook"]


def poll_retry_policy(poll_interval: float) -> RetryPolicy:
    """Retries of one request that never take longer than ``poll_interval`` (at most 60 s)."""
    budget = max(float(poll_interval), 0.1)
    return RetryPolicy(
        attempts=3,
        max_seconds=min(budget, 60.0),
        initial_wait=min(1.0, budget / 4),
        max_wait=min(15.0, budget / 2),
    )
