"""BackupJobSensor: wait for a vCenter backup job, in poke, reschedule or deferrable mode.

Imported by DAG files at parse time: the hook, the trigger and HTTP clients are imported only
where a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_backupjob.compat import conf
from airflow_provider_backupjob.settings import DEFAULT_CONN_ID
from airflow_provider_backupjob.waiting import OwnsBackupJobHook, event_outcome, poll, seconds

if TYPE_CHECKING:
    from airflow.sdk import Context


class BackupJobSensor(OwnsBackupJobHook, BaseSensorOperator):
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
        self.max_outage = seconds(max_outage, "max_outage")
        self.deferrable = deferrable

    def _poll_interval(self) -> float:
        return float(self.poke_interval)

    def poke(self, context: Context) -> PokeReturnValue:
        # a job id with path characters is refused by the protocol before any request is sent
        return poll(
            self.hook, self.job_id, max_outage=self.max_outage, pause=float(self.poke_interval), log=self.log
        )

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
