"""BackupJobSensor: wait for a vCenter backup job, in poke, reschedule or deferrable mode.

Imported by DAG files at parse time: the hook, the trigger and HTTP clients are imported only
where a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from airflow_provider_backupjob.exceptions import (
    BackupJobNotFound,
    UnexpectedResponseError,
    VCenterAuthError,
    VCenterError,
    VCenterTLSError,
    VCenterUnavailableError,
    error_from_event,
)
from airflow_provider_backupjob.models import BackupJobState, BackupJobStatus
from airflow_provider_backupjob.outage import OutageTracker
from airflow_provider_backupjob.protocol import validate_job_id
from airflow_provider_backupjob.settings import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_backupjob.hooks.backup_job import BackupJobHook


def job_outcome(job_id: str, status: BackupJobStatus | None, error: VCenterError | None) -> PokeReturnValue:
    """The one decision: what vCenter said (a status or an error) -> the task's outcome.

    Returns a done PokeReturnValue (with the status dict as XCom) only for a clear SUCCEEDED, a
    not-done one for NONE and INPROGRESS, and raises for everything else: fail closed.
    """
    if error is not None:
        if isinstance(error, BackupJobNotFound):
            raise AirflowFailException(f"backup job {job_id} does not exist on vCenter {error.host}: {error}")
        if isinstance(error, (VCenterAuthError, VCenterTLSError)):
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


class BackupJobSensor(BaseSensorOperator):
    """
    Wait until a vCenter Server Appliance backup job has succeeded.

    Succeeds on SUCCEEDED (XCom ``return_value``: the job status dict); keeps waiting on NONE and
    INPROGRESS; fails without retries on FAILED, on a missing job (404), on bad credentials or a
    missing privilege, or an unverifiable certificate; fails with retries on an answer it cannot
    understand. Through an outage (503s, refused or reset connections, timeouts) it keeps trying
    for up to ``max_outage``, then fails naming the host and the last error.

    :param job_id: the backup job id (templated), e.g. ``20170717-132629-5318154``.
    :param vcenter_conn_id: a ``vcenter_backup`` connection (templated).
    :param max_outage: how long the appliance may stay unreachable before the task fails.
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("job_id", "vcenter_conn_id")
    ui_color = "#78be20"

    def __init__(
        self,
        *,
        job_id: str,
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        max_outage: timedelta | float = timedelta(minutes=10),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.vcenter_conn_id = vcenter_conn_id
        self.max_outage = (
            max_outage.total_seconds() if isinstance(max_outage, timedelta) else float(max_outage)
        )
        if self.max_outage < 0:
            raise ValueError("max_outage must not be negative")
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> BackupJobHook:
        from airflow_provider_backupjob.hooks.backup_job import BackupJobHook
        from airflow_provider_backupjob.retry import RetryPolicy

        # One poke's retries never take longer than the poke interval; the outage rule does the rest.
        budget = max(float(self.poke_interval), 0.1)
        policy = RetryPolicy(
            attempts=3,
            max_seconds=min(budget, 60.0),
            initial_wait=min(1.0, budget / 4),
            max_wait=min(15.0, budget / 2),
        )
        return BackupJobHook(self.vcenter_conn_id, retry_policy=policy)

    def _close_hook(self) -> None:
        if "hook" in self.__dict__:
            self.hook.close()
            del self.__dict__["hook"]

    def _fetch(self) -> tuple[BackupJobStatus | None, VCenterError | None]:
        """Get the job, riding out an outage of up to ``max_outage`` (in this process: Airflow keeps
        no state between the pokes of a rescheduled sensor)."""
        outage = OutageTracker(self.max_outage)
        for _ in range(100_000):  # bounded: each round sleeps, and max_outage ends the outage
            try:
                return self.hook.get_job(self.job_id), None
            except VCenterUnavailableError as err:
                try:
                    left = outage.failed(err)
                except VCenterUnavailableError as final:
                    return None, final
                pause = min(float(self.poke_interval), left)
                self.log.warning("vCenter unavailable (%s); trying again in %.1f s", err, pause)
                time.sleep(pause)
            except VCenterError as err:
                return None, err
        raise AirflowException("gave up riding out the outage")  # pragma: no cover

    def poke(self, context: Context) -> PokeReturnValue:
        validate_job_id(self.job_id)
        status, error = self._fetch()
        outcome = job_outcome(self.job_id, status, error)
        if not outcome.is_done and status is not None:
            self.log.info("Backup job %s is %s, %d%% done", self.job_id, status.state.value, status.progress)
        return outcome

    def execute(self, context: Context) -> Any:
        try:
            if self.deferrable:
                done = self.poke(context)  # a job already finished needs no trigger
                if done.is_done:
                    return done.xcom_value
                self._defer()
            return super().execute(context)
        finally:
            self._close_hook()  # log out: no session outlives the task try, the poke, or the deferral

    def _defer(self) -> None:
        from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger

        timeout = float(self.timeout)
        self.defer(
            trigger=BackupJobTrigger(
                vcenter_conn_id=self.vcenter_conn_id,
                job_id=self.job_id,
                poll_interval=float(self.poke_interval),
                deadline=time.time() + timeout,
                max_outage=self.max_outage,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout),
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after the trigger: success only for a well-formed success event of this job."""
        return event_outcome(self.job_id, event).xcom_value

    def on_kill(self) -> None:
        self._close_hook()


def event_outcome(job_id: str, event: Any) -> PokeReturnValue:
    """Turn a BackupJobTrigger event into the task's outcome with :func:`job_outcome`; fails closed."""
    if not isinstance(event, dict):
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
