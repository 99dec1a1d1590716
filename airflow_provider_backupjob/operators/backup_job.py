"""StartBackupJobOperator: start an appliance backup, optionally wait for it, cancel it when stopped."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook, BaseOperator, BaseOperatorLink, conf
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowTaskTimeout,
)

from airflow_provider_backupjob.settings import DEFAULT_CONN_ID
from airflow_provider_backupjob.waiting import OwnsBackupJobHook, seconds

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

    from airflow_provider_backupjob.models import BackupJobStatus, BackupRequest


class VCenterApplianceLink(BaseOperatorLink):
    """Opens the appliance management interface (VAMI, ``https://<host>:5480/``) of the task's vCenter."""

    name = "vCenter Appliance Management"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return value if isinstance(value, str) else ""


class StartBackupJobOperator(OwnsBackupJobHook, BaseOperator):
    """
    Start a file-based backup of the vCenter Server Appliance and (by default) wait for it.

    The job id is pushed to XCom (key ``job_id``) as soon as the appliance accepted the job; with
    ``wait_for_completion`` the return value is the final status dict, with the outcomes of
    :class:`~airflow_provider_backupjob.sensors.backup_job.BackupJobSensor`. If the task is killed
    (also while deferred: marked failed or success, or cleared), its ``execution_timeout`` passes, or
    the wait's ``timeout`` passes, the job is cancelled on the appliance; a triggerer restart does not
    cancel it, the wait resumes. A start is never sent twice.

    The location's user and password and the backup password come from ``location_conn_id`` (login,
    password, and the extra ``backup_password``) or from the arguments of the same names; either way
    they are masked in logs and kept out of templated fields and XCom.

    :param location: URL of the backup folder with its scheme (templated), e.g.
        ``sftp://backup.example.com/vcsa``.
    :param location_type: FTP, HTTP, FTPS, HTTPS, SCP, SFTP, NFS or SMB; by default the URL's scheme.
    :param parts: the parts to back up (templated); ``common`` is always included by vCenter.
    :param poll_interval: seconds between polls while waiting.
    :param timeout: the longest wait; then the job is cancelled and the task fails.
    :param max_outage: how long vCenter may stay unreachable during the wait.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("location", "location_type", "parts", "comment", "vcenter_conn_id")
    operator_extra_links = (VCenterApplianceLink(),)
    ui_color = "#78be20"

    def __init__(
        self,
        *,
        location: str,
        location_type: str | None = None,
        parts: Sequence[str] | str = ("common",),
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        location_conn_id: str | None = None,
        location_user: str | None = None,
        location_password: str | None = None,
        backup_password: str | None = None,
        comment: str | None = None,
        fast_backup: bool | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 30.0,
        timeout: timedelta | float = timedelta(hours=12),
        max_outage: timedelta | float = timedelta(minutes=10),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.location = location
        self.location_type = location_type
        self.parts = parts
        self.vcenter_conn_id = vcenter_conn_id
        self.location_conn_id = location_conn_id
        self.location_user = location_user
        self._location_password = location_password
        self._backup_password = backup_password
        self.comment = comment
        self.fast_backup = fast_backup
        self.wait_for_completion = wait_for_completion
        self.poll_interval = float(poll_interval)
        self.wait_timeout = seconds(timeout, "timeout")
        self.max_outage = seconds(max_outage, "max_outage")
        self.deferrable = deferrable
        self.job_id: str | None = None
        self._finished = False

    def _poll_interval(self) -> float:
        return float(self.poll_interval)

    def backup_request(self) -> BackupRequest:
        """The BackupRequest, with the secrets from the connection or the arguments, masked."""
        from airflow.sdk.log import mask_secret

        from airflow_provider_backupjob.models import BackupRequest

        user, password, backup_password = self.location_user, self._location_password, self._backup_password
        if self.location_conn_id:
            conn = BaseHook.get_connection(self.location_conn_id)
            user = user or conn.login
            password = password or conn.password
            backup_password = backup_password or conn.extra_dejson.get("backup_password")
        for secret in (password, backup_password):
            if secret:
                mask_secret(secret)
        from airflow_provider_backupjob.exceptions import VCenterConfigError

        scheme = urlsplit(self.location).scheme if "://" in self.location else ""
        if not scheme:
            example = f"{(self.location_type or 'sftp').lower()}://{self.location.lstrip('/')}"
            raise VCenterConfigError(
                f"location {self.location!r:.200} has no scheme: give the backup folder as a URL, "
                f"e.g. {example!r:.200} (ftp, ftps, http, https, scp, sftp, nfs or smb)"
            )
        location_type = self.location_type or scheme.upper()
        return BackupRequest(
            parts=[self.parts] if isinstance(self.parts, str) else list(self.parts),
            location_type=location_type,
            location=self.location,
            location_user=user or None,
            location_password=password or None,
            backup_password=backup_password or None,
            comment=self.comment,
            fast_backup=self.fast_backup,
        )

    def execute(self, context: Context) -> Any:
        try:
            status = self._start()
            self._announce(context, status)
            if not self.wait_for_completion:
                self._finished = True
                return status.to_dict()
            deadline = self._deadline(context)
            if self.deferrable:
                self._defer(deadline)
            return self._wait(deadline)
        except AirflowTaskTimeout as err:  # execution_timeout: stop the backup we started
            self._cancel(f"the task's execution_timeout passed ({type(err).__name__})")
            raise
        finally:
            self._close_hook()

    def _start(self) -> BackupJobStatus:
        """Send the start once; a failure becomes the task's error, saying whether it may have started."""
        from airflow_provider_backupjob.exceptions import (
            BackupAlreadyRunning,
            VCenterError,
            VCenterUnavailableError,
        )
        from airflow_provider_backupjob.outcome import error_outcome

        try:
            return self.hook.start_backup(self.backup_request())
        except BackupAlreadyRunning as err:
            raise AirflowException(str(err)) from None
        except VCenterUnavailableError as err:
            raise AirflowException(
                f"the request to start a backup got no answer ({err}); it may have started on the "
                "appliance, so it was not sent again: look at the appliance's backup jobs before a retry"
            ) from None
        except VCenterError as err:  # VCenterConfigError (a bad request, nothing sent) included
            raise error_outcome(err.job_id or "(new)", err) from None

    def _announce(self, context: Context, status: BackupJobStatus) -> None:
        self.job_id = status.id
        ti = context["ti"]
        ti.xcom_push(key="job_id", value=status.id)
        ti.xcom_push(key=VCenterApplianceLink().xcom_key, value=self.hook.settings.ui_url)
        self.log.info(
            "Started backup job %s on vCenter %s to %s", status.id, self.hook.settings.host, self.location
        )

    def _deadline(self, context: Context) -> float:
        """When the wait ends (epoch): its ``timeout``, or the task's ``execution_timeout`` if sooner."""
        deadline = time.time() + self.wait_timeout
        if self.execution_timeout is not None:
            started = context["ti"].start_date
            if started is not None:
                deadline = min(deadline, started.timestamp() + self.execution_timeout.total_seconds())
        return deadline

    def _wait(self, deadline: float) -> Any:
        """Wait in this worker; through an outage up to ``max_outage``, never past the deadline."""
        from airflow_provider_backupjob.outage import Wait, wait_in_worker
        from airflow_provider_backupjob.outcome import job_outcome

        assert self.job_id is not None
        wait = Wait(
            self.job_id,
            poll_interval=self.poll_interval,
            max_outage=self.max_outage,
            deadline=deadline,
            log=self.log,
        )
        ended = wait_in_worker(wait, self.hook.get_job)
        if ended.answer is None:
            self._cancel(f"the wait's timeout ({self.wait_timeout:g} s) passed")
            raise AirflowFailException(
                f"{ended.timeout_message(self.job_id, 'timeout reached')}; it was cancelled"
            )
        result = job_outcome(self.job_id, ended.answer).xcom_value
        self._finished = True
        return result

    def _defer(self, deadline: float) -> None:
        from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger

        assert self.job_id is not None
        self.defer(
            trigger=BackupJobTrigger(
                job_id=self.job_id,
                vcenter_conn_id=self.vcenter_conn_id,
                poll_interval=self.poll_interval,
                deadline=deadline,
                max_outage=self.max_outage,
                cancel_on_kill=True,  # this task started the job: a user's kill while deferred cancels it
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(deadline - time.time(), 1.0) + 60),  # the trigger's own comes first
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        from airflow_provider_backupjob.outcome import event_outcome

        job_id = event.get("job_id") if isinstance(event, dict) else None
        self.job_id = job_id if isinstance(job_id, str) else None
        try:
            return event_outcome(self.job_id or "", event).xcom_value
        except AirflowSensorTimeout as timed_out:
            self._cancel("the wait's timeout passed")
            raise AirflowFailException(f"{timed_out}; it was cancelled") from None
        finally:
            self._close_hook()

    def _cancel(self, why: str) -> None:
        """Cancel the job we started, if it may still run. Logged; never raises."""
        from airflow_provider_backupjob.exceptions import VCenterError

        if not self.job_id or self._finished:
            return
        self.log.warning("Cancelling backup job %s on vCenter: %s", self.job_id, why)
        try:
            result = self.hook.cancel_job(self.job_id)
            self.log.warning("vCenter answered the cancel of backup job %s: %s", self.job_id, result.status)
        except (VCenterError, ValueError) as err:
            self.log.error("Could not cancel backup job %s: %s", self.job_id, err)
        finally:
            self._finished = True

    def on_kill(self) -> None:
        self._cancel("the task was killed")
        self._close_hook()
