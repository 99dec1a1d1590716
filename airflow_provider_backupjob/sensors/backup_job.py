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
from airflow_provider_backupjob.waiting import OwnsBackupJobHook, seconds

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_backupjob.models import BackupJobStatus
    from airflow_provider_backupjob.outage import Answer, Wait
    from airflow_provider_backupjob.retry import RetryPolicy
    from airflow_provider_backupjob.selection import JobSelector


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
    :param max_outage: how long the appliance may stay unreachable before the task fails (in
        reschedule mode: within one poke, see the README).
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
            self.job_id or "", poll_interval=self._poll_interval(), max_outage=self.max_outage, log=self.log
        )

    def _selector(self) -> JobSelector:
        """The rendered window, checked: a bad one fails the task without retries."""
        from airflow_provider_backupjob.exceptions import VCenterConfigError
        from airflow_provider_backupjob.selection import JobSelector

        try:
            return JobSelector.parse(self.started_after, self.started_before, self.job_type)
        except VCenterConfigError as err:
            raise AirflowFailException(str(err)) from None

    def poke(self, context: Context) -> PokeReturnValue:
        """One fetch (its retries within one poke interval), judged by the wait's rules: done, keep
        waiting (also through an outage shorter than ``max_outage``), or the task's error. When
        selecting, the fetch is one bounded ``find_job`` and the wait follows the job it chose."""
        from airflow_provider_backupjob.outage import Ended, fetch
        from airflow_provider_backupjob.outcome import job_outcome

        if "_wait" not in self.__dict__:
            self._wait = self._new_wait()
        if self.job_id is None:
            selector = self._selector()
            answer = self._select(selector)
            if answer is None:  # the appliance answered: no such job yet
                self._wait.nothing_yet()  # a poke never sleeps: the pause is BaseSensorOperator's
                self.log.info(selector.waiting_text)
                return PokeReturnValue(is_done=False)
            label = selector.description
        else:
            # a job id with path characters is refused by the protocol before any request is sent
            answer = fetch(self.hook.get_job, self.job_id)
            label = self.job_id
        step = self._wait.after(answer)
        if isinstance(step, Ended):
            assert step.answer is not None  # a wait without a deadline ends only with an answer
            return job_outcome(self._wait.job_id or label, step.answer)
        return PokeReturnValue(is_done=False)

    def _select(self, selector: JobSelector) -> Answer | None:
        """The newest job the window and type admit (the wait now follows it), an error, or None."""
        from airflow_provider_backupjob.exceptions import VCenterError

        try:
            status: BackupJobStatus | None = self.hook.find_job(**selector.find_kwargs())
        except VCenterError as err:
            return err
        if status is not None:
            self.log.info(selector.chosen_text(status))
            self._wait.job_id = status.id  # a newer job in the window replaces an older one
        return status

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
        # selecting: the trigger does the selection, the window in its kwargs as ISO strings
        select = {"job_id": self.job_id} if self.job_id is not None else self._selector().to_kwargs()
        self.defer(
            trigger=BackupJobTrigger(
                vcenter_conn_id=self.vcenter_conn_id,
                poll_interval=float(self.poke_interval),
                deadline=deadline,
                max_outage=self.max_outage,
                **select,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(deadline - time.time(), 0.0)),
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after the trigger: success only for a well-formed success event of this job (or,
        when selecting, of a job the window and type admit)."""
        from airflow_provider_backupjob.outcome import event_outcome

        if self.job_id is not None:
            return event_outcome(self.job_id, event).xcom_value
        return self._selected_outcome(self._selector(), event)

    def _selected_outcome(self, selector: JobSelector, event: Any) -> Any:
        from airflow_provider_backupjob.exceptions import VCenterError
        from airflow_provider_backupjob.models import BackupJobStatus
        from airflow_provider_backupjob.outcome import event_outcome, job_outcome

        if not isinstance(event, dict):
            raise AirflowException(f"unexpected trigger event for the {selector.description}: {event!r:.200}")
        if event.get("status") != "terminal":
            label = event.get("job_id") or selector.description
            return event_outcome(label, {**event, "job_id": label}).xcom_value
        job = event.get("job")
        try:
            status = BackupJobStatus.from_dict(job)
        except VCenterError as err:
            return job_outcome(selector.description, err).xcom_value
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
