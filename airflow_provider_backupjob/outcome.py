"""The outcome table: what vCenter said (a status, an error or a trigger event) -> the task's outcome.

Pure: no I/O, no clock. Shared by the sensor's ``poke`` and ``execute_complete`` and by the operator.
It fails closed: nothing but a clear SUCCEEDED of the requested job is a success.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

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


def error_outcome(job_id: str, error: VCenterError) -> AirflowException:
    """The task error for what vCenter (or the way to it) said: returned, for the caller to raise.

    Misconfiguration and definite answers fail without retries; an outage or an answer that cannot be
    understood fails with the task's retries.
    """
    if isinstance(error, BackupJobNotFound):
        return AirflowFailException(f"backup job {job_id} does not exist on vCenter {error.host}")
    if isinstance(error, (VCenterAuthError, VCenterTLSError, VCenterConfigError)):
        return AirflowFailException(str(error))
    if isinstance(error, VCenterUnavailableError):
        return AirflowException(f"vCenter unavailable: {error}")  # the error names the host
    if isinstance(error, UnexpectedResponseError):
        return AirflowException(str(error))
    return AirflowException(f"vCenter error: {error}")


def status_outcome(job_id: str, status: BackupJobStatus) -> PokeReturnValue:
    """A status -> done (XCom: the status dict) for SUCCEEDED of this job, not done for NONE and
    INPROGRESS; raises for everything else."""
    if status.id != job_id:
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


def job_outcome(job_id: str, answer: BackupJobStatus | VCenterError) -> PokeReturnValue:
    """What vCenter answered (a status or an error) -> the task's outcome; raises for an error."""
    if isinstance(answer, VCenterError):
        raise error_outcome(job_id, answer)
    return status_outcome(job_id, answer)


def event_outcome(job_id: str, event: Any) -> PokeReturnValue:
    """A BackupJobTrigger event -> the task's outcome, through the same table; fails closed."""
    if not isinstance(event, dict) or event.get("job_id") != job_id:
        raise AirflowException(f"unexpected trigger event for backup job {job_id}: {event!r:.200}")
    kind = event.get("status")
    if kind == "timeout":
        raise AirflowSensorTimeout(str(event.get("message") or f"timed out waiting for backup job {job_id}"))
    if kind == "error":
        raise error_outcome(job_id, error_from_event(event.get("error")))
    if kind == "terminal":
        try:
            status = BackupJobStatus.from_dict(event.get("job"))
        except VCenterError as err:
            raise error_outcome(job_id, err) from None
        if status_outcome(job_id, status).is_done:
            return PokeReturnValue(is_done=True, xcom_value=status.to_dict())
    raise AirflowException(f"unexpected trigger event for backup job {job_id}: {event!r:.200}")
