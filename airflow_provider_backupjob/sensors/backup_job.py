"""BackupJobSensor: wait for a vCenter backup job, in poke, reschedule or deferrable mode.

Imported by DAG files at parse time: the hook, the trigger and HTTP clients are imported only
where a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_backupjob.settings import DEFAULT_CONN_ID
from airflow_provider_backupjob.waiting import OwnsBackupJobHook, seconds

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_backupjob.outage import Wait
    from airflow_provider_backupjob.retry import RetryPolicy


class BackupJobSensor(OwnsBackupJobHook, BaseSensorOperator):
    """
    Wait until a vCenter Server Appliance backup job has succeeded.

    Succeeds on SUCCEEDED (XCom ``return_value``: the job status dict); keeps waiting on NONE and
    INPROGRESS; fails without retries on FAILED, on a missing job (404), on bad credentials or a
    missing privilege, or an unverifiable certificate; fails with retries on an answer it cannot
    understand. Through an outage (503s, refused or reset connections, timeouts) it keeps trying
    for up to ``max_outage``, then fails naming the host and the last error; the sensor's
    ``timeout`` always comes first if it is sooner (``AirflowSensorTimeout``, skipped with
    ``soft_fail``). No worker slot is held through an outage in reschedule or deferrable mode: a
    poke gives up within one poke interval and the next one tries again, a deferrable sensor defers
    at once and the trigger rides the outage out.

    :param job_id: the backup job id (templated), e.g. ``20170717-132629-5318154``.
    :param vcenter_conn_id: a ``vcenter_backup`` connection (templated).
    :param max_outage: how long the appliance may stay unreachable before the task fails (in
        reschedule mode: within one poke, see the README).
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
        self.max_outage = seconds(max_outage, "max_outage")
        self.deferrable = deferrable

    def _poll_interval(self) -> float:
        return float(self.poke_interval)

    def _retry_policy(self) -> RetryPolicy:
        from airflow_provider_backupjob.retry import NO_RETRY
        from airflow_provider_backupjob.waiting import poll_retry_policy

        if self.deferrable:
            return NO_RETRY  # the check before deferring: a transient failure defers at once
        return poll_retry_policy(min(float(self.poke_interval), float(self.timeout)))

    def _new_wait(self) -> Wait:
        from airflow_provider_backupjob.outage import Wait

        # no deadline: BaseSensorOperator enforces the timeout between pokes, and a poke never
        # sleeps, so the outage clock runs across the pokes of this process
        return Wait(
            self.job_id, poll_interval=self._poll_interval(), max_outage=self.max_outage, log=self.log
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """One fetch (its retries within one poke interval), judged by the wait's rules: done, keep
        waiting (also through an outage shorter than ``max_outage``), or the task's error."""
        from airflow_provider_backupjob.outage import Ended, fetch
        from airflow_provider_backupjob.outcome import job_outcome

        if "_wait" not in self.__dict__:
            self._wait = self._new_wait()
        # a job id with path characters is refused by the protocol before any request is sent
        step = self._wait.after(fetch(self.hook.get_job, self.job_id))
        if isinstance(step, Ended):
            assert step.answer is not None  # a wait without a deadline ends only with an answer
            return job_outcome(self.job_id, step.answer)
        return PokeReturnValue(is_done=False)

    def execute(self, context: Context) -> Any:
        self._wait = self._new_wait()  # the outage clock starts with the task try (or the poke)
        started = self._started(context)
        try:
            if self.deferrable:
                done = self.poke(context)  # a job already finished needs no trigger
                if done.is_done:
                    return done.xcom_value
                self._defer(started)
            return super().execute(context)
        finally:
            self._close_hook()  # log out: no session outlives the task try, the poke, or the deferral

    def _started(self, context: Context) -> float:
        """When the sensor's ``timeout`` started counting (epoch), as BaseSensorOperator counts it:
        in reschedule mode at the first try's start, else now."""
        if self.reschedule:
            first = context["ti"].get_first_reschedule_date(context)
            if first is not None:
                return float(first.timestamp())
        return time.time()

    def _defer(self, started: float) -> None:
        from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger

        deadline = started + float(self.timeout)
        self.defer(
            trigger=BackupJobTrigger(
                vcenter_conn_id=self.vcenter_conn_id,
                job_id=self.job_id,
                poll_interval=float(self.poke_interval),
                deadline=deadline,
                max_outage=self.max_outage,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(deadline - time.time(), 0.0)),
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after the trigger: success only for a well-formed success event of this job."""
        from airflow_provider_backupjob.outcome import event_outcome

        return event_outcome(self.job_id, event).xcom_value

    def on_kill(self) -> None:
        self._close_hook()
