"""What waiting for a backup job means, shared by the sensor, the operator and the trigger.

- :func:`job_outcome`: the one decision from what vCenter said to the task's outcome (fails closed);
- :func:`event_outcome`: the same decision for a trigger event;
- :func:`fetch_status`: one fetch that rides out an outage of up to ``max_outage``;
- :func:`poll`: a worker's poll: fetch, decide, log progress;
- :func:`poll_retry_policy`: retries of one poll never take longer than the poll interval.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import PokeReturnValue

from airflow_provider_backupjob.compat import AirflowException, AirflowFailException, AirflowSensorTimeout
from airflow_provider_backupjob.exceptions import (
    BackupJobNotFound,
    UnexpectedResponseError,
    VCenterAuthError,
    VCenterConfigError,
    VCenterError,
    VCenterTLSError,
    VCenterUnavailableError,
    error_from_event,
)
from airflow_provider_backupjob.models import BackupJobState, BackupJobStatus
from airflow_provider_backupjob.outage import OutageTracker
from airflow_provider_backupjob.retry import RetryPolicy

if TYPE_CHECKING:
    import logging

    from airflow_provider_backupjob.hooks.backup_job import BackupJobHook


def seconds(value: timedelta | float, name: str) -> float:
    """A duration argument (timedelta or seconds) as non-negative seconds."""
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if result < 0:
        raise ValueError(f"{name} must not be negative")
    return result


class OwnsBackupJobHook:
    """For operators that poll: a hook made on first use (never at parse time) and closed (logged
    out) by ``_close_hook``, whose retries fit within one poll interval."""

    vcenter_conn_id: str

    def _poll_interval(self) -> float:
        raise NotImplementedError

    @cached_property
    def hook(self) -> BackupJobHook:
        from airflow_provider_backupjob.hooks.backup_job import BackupJobHook

        return BackupJobHook(self.vcenter_conn_id, retry_policy=poll_retry_policy(self._poll_interval()))

    def _close_hook(self) -> None:
        if "hook" in self.__dict__:
            self.hook.close()
            del self.__dict__["hook"]


def poll_retry_policy(poll_interval: float) -> RetryPolicy:
    budget = max(float(poll_interval), 0.1)
    return RetryPolicy(
        attempts=3,
        max_seconds=min(budget, 60.0),
        initial_wait=min(1.0, budget / 4),
        max_wait=min(15.0, budget / 2),
    )


def job_outcome(job_id: str, status: BackupJobStatus | None, error: VCenterError | None) -> PokeReturnValue:
    """What vCenter said (a status or an error) -> the task's outcome.

    Returns a done PokeReturnValue (XCom: the status dict) only for a clear SUCCEEDED of this job, a
    not-done one for NONE and INPROGRESS, and raises for everything else.
    """
    if error is not None:
        if isinstance(error, BackupJobNotFound):
            raise AirflowFailException(f"backup job {job_id} does not exist on vCenter {error.host}: {error}")
        if isinstance(error, (VCenterAuthError, VCenterTLSError, VCenterConfigError)):
            raise AirflowFailException(str(error))
        if isinstance(error, VCenterUnavailableError):
            raise AirflowException(f"vCenter {error.host} unavailable: {error}")
        if isinstance(error, UnexpectedResponseError):
            raise AirflowException(str(error))
        raise AirflowException(f"vCenter error: {error}")
    if status is None or status.id != job_id:
        raise AirflowException(f"unexpected answer for backup job {job_id}: {status!r:.200}")
    if status.state is BackupJobState.SUCCEEDED:
        return PokeReturnValue(is_done=True, xcom_value=status.to_dict())
    if status.state is BackupJobState.FAILED:
        raise AirflowFailException(
            f"backup job {job_id} FAILED (progress {status.progress}%): {status.message_text or 'no message'}"
        )
    if status.state in (BackupJobState.NONE, BackupJobState.INPROGRESS):
        return PokeReturnValue(is_done=False)
    raise AirflowException(f"backup job {job_id} is in an unknown state {status.state!r}")  # pragma: no cover


def event_outcome(job_id: str, event: Any) -> PokeReturnValue:
    """A BackupJobTrigger event -> the task's outcome, through :func:`job_outcome`; fails closed."""
    if not isinstance(event, dict) or event.get("job_id") != job_id:
        raise AirflowException(f"unexpected trigger event for backup job {job_id}: {event!r:.200}")
    kind = event.get("status")
    if kind == "timeout":
        raise AirflowSensorTimeout(str(event.get("message") or f"timed out waiting for backup job {job_id}"))
    if kind == "error":
        return job_outcome(job_id, None, error_from_event(event.get("error")))
    if kind == "terminal":
        try:
            status = BackupJobStatus.from_dict(event.get("job"))
        except VCenterError as err:
            return job_outcome(job_id, None, err)
        outcome = job_outcome(job_id, status, None)
        if outcome.is_done:
            return outcome
    raise AirflowException(f"unexpected trigger event for backup job {job_id}: {event!r:.200}")


def fetch_status(
    hook: BackupJobHook, job_id: str, *, max_outage: float, pause: float, log: logging.Logger | Any
) -> tuple[BackupJobStatus | None, VCenterError | None]:
    """Get the job, riding out an outage of up to ``max_outage`` seconds in this process.

    Airflow keeps no state between the pokes of a rescheduled sensor (it even clears its XCom), so
    an outage is measured within one poke, the same way in every mode.
    """
    outage = OutageTracker(max_outage)
    for _ in range(100_000):  # bounded: every round sleeps, and max_outage ends the outage
        try:
            return hook.get_job(job_id), None
        except VCenterUnavailableError as err:
            try:
                left = outage.failed(err)
            except VCenterUnavailableError as final:
                return None, final
            wait = min(pause, left)
            log.warning("vCenter unavailable (%s); trying again in %.1f s", err, wait)
            time.sleep(wait)
        except VCenterError as err:
            return None, err
    raise AirflowException("gave up riding out the outage")  # pragma: no cover


def poll(hook: BackupJobHook, job_id: str, *, max_outage: float, pause: float, log: Any) -> PokeReturnValue:
    """One poll from a worker: fetch (riding out an outage), decide, and log progress while not done."""
    status, error = fetch_status(hook, job_id, max_outage=max_outage, pause=pause, log=log)
    outcome = job_outcome(job_id, status, error)
    if not outcome.is_done and status is not None:
        log.info(status.progress_text)
    return outcome
