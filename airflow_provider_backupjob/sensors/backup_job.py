"""BackupJobSensor: wait for a vCenter backup job, in poke, reschedule or deferrable mode.

The job is given by id, or selected: the newest job started in a window (``started_after``,
``started_before``) of a type (SCHEDULED, MANUAL). Imported by DAG files at parse time: the hook,
the trigger and HTTP clients are imported only where a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_backupjob.settings import DEFAULT_CONN_ID
from airflow_provider_backupjob.waiting import OwnsBackupJobHook, event_outcome, job_outcome, poll, seconds

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_backupjob.selection import JobSelector


class BackupJobSensor(OwnsBackupJobHook, BaseSensorOperator):
    """
    Wait until a vCenter Server Appliance backup job has succeeded.

    Succeeds on SUCCEEDED (XCom ``return_value``: the job status dict); keeps waiting on NONE and
    INPROGRESS; fails without retries on FAILED, on a missing job (404), on bad credentials or a
    missing privilege, or an unverifiable certificate; fails with retries on an answer it cannot
    understand. Through an outage (503s, refused or reset connections, timeouts) it keeps trying
    for up to ``max_outage``, then fails naming the host and the last error.

    Give the job by ``job_id``, or select it with ``started_after``: then the sensor waits for the
    newest job that started in ``[started_after, started_before)`` and is of ``job_type``, keeps
    waiting (within ``timeout``) while there is none, and applies the table above to the one it
    chose; the XCom dict then also has ``type``, ``size``, ``duration`` and ``location``.

    :param job_id: the backup job id (templated), e.g. ``20170717-132629-5318154``.
    :param started_after: the window's start (templated): a datetime or an ISO 8601 string with a
        time zone, e.g. ``"{{ data_interval_end }}"``. Exactly one of ``job_id`` and this.
    :param started_before: the window's end, exclusive (templated); None: open.
    :param job_type: ``"SCHEDULED"``, ``"MANUAL"`` or None (any) (templated).
    :param vcenter_conn_id: a ``vcenter_backup`` connection (templated).
    :param max_outage: how long the appliance may stay unreachable before the task fails.
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (
        "job_id",
        "started_after",
        "started_before",
        "job_type",
        "vcenter_conn_id",
    )
    ui_color = "#78be20"

    def __init__(
        self,
        *,
        job_id: str | None = None,
        started_after: datetime | str | None = None,
        started_before: datetime | str | None = None,
        job_type: str | None = None,
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        max_outage: timedelta | float = timedelta(minutes=10),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (job_id is None) == (started_after is None):
            raise ValueError(
                "BackupJobSensor needs exactly one of job_id (a known job) or started_after (the newest "
                "job started after it, e.g. started_after='{{ data_interval_end }}', job_type='SCHEDULED')"
            )
        if job_id is not None and (started_before is not None or job_type is not None):
            raise ValueError(
                "started_before and job_type select a job: use them with started_after, not job_id"
            )
        self.job_id = job_id
        self.started_after = started_after
        self.started_before = started_before
        self.job_type = job_type
        self.vcenter_conn_id = vcenter_conn_id
        self.max_outage = seconds(max_outage, "max_outage")
        self.deferrable = deferrable

    def _poll_interval(self) -> float:
        return float(self.poke_interval)

    def _selector(self) -> JobSelector:
        """The rendered window, checked: a bad one fails the task without retries."""
        from airflow_provider_backupjob.exceptions import VCenterConfigError
        from airflow_provider_backupjob.selection import JobSelector

        try:
            return JobSelector.parse(self.started_after, self.started_before, self.job_type)
        except VCenterConfigError as err:
            raise AirflowFailException(str(err)) from None

    def poke(self, context: Context) -> PokeReturnValue:
        if self.job_id is None:
            return self._poke_selected(self._selector())
        # a job id with path characters is refused by the protocol before any request is sent
        return poll(
            self.hook, self.job_id, max_outage=self.max_outage, pause=float(self.poke_interval), log=self.log
        )

    def _poke_selected(self, selector: JobSelector) -> PokeReturnValue:
        """Select the job (one bounded find_job), then the outcome table on what it said."""
        from airflow_provider_backupjob.exceptions import VCenterError, VCenterUnavailableError

        try:
            status = self.hook.find_job(**selector.find_kwargs())
        except VCenterUnavailableError as err:
            # nothing chosen yet: keep waiting within the sensor's timeout
            self.log.warning("vCenter unavailable while looking for the %s: %s", selector.description, err)
            return PokeReturnValue(is_done=False)
        except VCenterError as err:
            return job_outcome(selector.description, None, err)
        if status is None:
            self.log.info(selector.waiting_text)
            return PokeReturnValue(is_done=False)
        self.log.info(selector.chosen_text(status))
        outcome = job_outcome(status.id, status, None)
        if not outcome.is_done:
            self.log.info(status.progress_text)
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
        # selecting: the trigger does the selection, the window in its kwargs as ISO strings
        select = {"job_id": self.job_id} if self.job_id is not None else self._selector().to_kwargs()
        self.defer(
            trigger=BackupJobTrigger(
                vcenter_conn_id=self.vcenter_conn_id,
                poll_interval=float(self.poke_interval),
                deadline=time.time() + timeout,
                max_outage=self.max_outage,
                **select,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout),
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after the trigger: success only for a well-formed success event of this job (or,
        when selecting, of a job the window and type admit)."""
        if self.job_id is not None:
            return event_outcome(self.job_id, event).xcom_value
        return self._selected_outcome(self._selector(), event)

    def _selected_outcome(self, selector: JobSelector, event: Any) -> Any:
        from airflow_provider_backupjob.exceptions import VCenterError
        from airflow_provider_backupjob.models import BackupJobStatus

        if not isinstance(event, dict):
            raise AirflowException(f"unexpected trigger event for the {selector.description}: {event!r:.200}")
        if event.get("status") != "terminal":
            label = event.get("job_id") or selector.description
            return event_outcome(label, {**event, "job_id": label}).xcom_value
        job = event.get("job")
        try:
            status = BackupJobStatus.from_dict(job)
        except VCenterError as err:
            return job_outcome(selector.description, None, err).xcom_value
        assert isinstance(job, dict)  # from_dict accepts nothing else
        if event.get("job_id") != status.id or not selector.matches(status, job.get("type")):
            raise AirflowException(
                f"the trigger chose a job outside the {selector.description}: {event!r:.200}"
            )
        self.log.info(selector.chosen_text(status))
        xcom = dict(event_outcome(status.id, event).xcom_value or {})
        return {**xcom, **{k: job[k] for k in ("type", "size", "duration", "location") if k in job}}

    def on_kill(self) -> None:
        self._close_hook()
