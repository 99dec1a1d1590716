"""BackupJobTrigger: wait for a backup job in the triggerer, asynchronously."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_backupjob.exceptions import VCenterError
from airflow_provider_backupjob.settings import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow_provider_backupjob.selection import JobSelector

# vCenter's reverse proxy closes idle connections after a while; past this, reconnecting is cheaper
# than holding thousands of idle sockets.
KEEPALIVE_MAX = 120.0
# How long a cancel on kill may take (the state check and the cancel request each).
CANCEL_TIMEOUT = 20.0
# How long the task-state read before a cancel may take (Airflow before 3.3). A triggerer shutting
# down stops answering it, and Airflow 3.0 kills the trigger runner 10 s after SIGTERM: the read gives
# up well before that, so that the trigger still logs out.
STATE_TIMEOUT = 4.0


class BackupJobTrigger(BaseTrigger):
    """
    Poll a backup job until it ends, the deadline passes, or an outage outlasts ``max_outage``.

    Its kwargs are JSON primitives and hold no secret: the connection is looked up in the triggerer.
    The triggers of one triggerer share one vCenter session per appliance and credentials
    (:mod:`~airflow_provider_backupjob.hooks.shared_session`): it is logged out one poll interval
    (at most a minute) after the last of them ends, fails or is cancelled, at once when the triggerer
    stops. Those waiting on the same ``job_id`` share one poll of it per interval
    (:mod:`~airflow_provider_backupjob.hooks.shared_poll`), each with its own deadline, ``max_outage``
    and outcome; a trigger selecting its job polls on its own, on the shared session. With
    ``BACKUPJOB_SHARED_SESSIONS=0`` each trigger holds a session of its own for its whole wait.
    A trigger cancelled by a triggerer restart is rebuilt from its kwargs and resumes the same wait
    (the deadline is absolute). Events (all carry ``job_id``):

    - ``{"status": "terminal", "job": <status dict>}``: the job SUCCEEDED or FAILED;
    - ``{"status": "error", "error": <error dict>}``: vCenter said no (404, auth, bad answer, outage);
    - ``{"status": "timeout", "message": ...}``: ``deadline`` (epoch seconds) passed first.

    Without ``job_id`` it selects the job each poll: the newest started in ``[started_after,
    started_before)`` (ISO 8601 strings) of ``job_type``, waiting while there is none; its events
    then carry the chosen job's id (``None`` on a timeout or an error before any was chosen).

    :param poll_interval: seconds between polls (the sensor's ``poke_interval``).
    :param max_outage: seconds the appliance may stay unreachable before an error event.
    :param cancel_on_kill: the task started the job (StartBackupJobOperator): cancel it when a user
        kills the deferred task (marks it failed or success, or clears it). Never on a triggerer
        restart or redistribution, nor at the deadline.
    """

    def __init__(
        self,
        job_id: str | None = None,
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        deadline: float | None = None,
        max_outage: float = 600.0,
        cancel_on_kill: bool = False,
        started_after: str | None = None,
        started_before: str | None = None,
        job_type: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if (job_id is None) == (started_after is None):
            raise ValueError("BackupJobTrigger needs exactly one of job_id and started_after")
        self.job_id = job_id
        self.started_after = started_after
        self.started_before = started_before
        self.job_type = job_type
        self.vcenter_conn_id = vcenter_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = None if deadline is None else float(deadline)
        self.max_outage = float(max_outage)
        self.cancel_on_kill = bool(cancel_on_kill)
        self._ended = False  # an event was produced: nothing left to cancel

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "job_id": self.job_id,
            "vcenter_conn_id": self.vcenter_conn_id,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline,
            "max_outage": self.max_outage,
            "cancel_on_kill": self.cancel_on_kill,
        }
        if self.job_id is None:
            kwargs.update(
                started_after=self.started_after, started_before=self.started_before, job_type=self.job_type
            )
        return (f"{type(self).__module__}.{type(self).__qualname__}", kwargs)

    def _hook(self) -> Any:
        from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook
        from airflow_provider_backupjob.hooks.shared_session import linger_for
        from airflow_provider_backupjob.waiting import poll_retry_policy

        return AsyncBackupJobHook(
            self.vcenter_conn_id,
            retry_policy=poll_retry_policy(self.poll_interval),
            keepalive_expiry=min(self.poll_interval + 15.0, KEEPALIVE_MAX),
            shared_session_linger=linger_for(self.poll_interval),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_backupjob.compat import TRIGGER_ON_KILL
        from airflow_provider_backupjob.hooks.shared_poll import subscribe_job
        from airflow_provider_backupjob.hooks.shared_session import stopping

        hook = self._hook()  # on the loop's shared session of its appliance
        if self.job_id is not None:
            # get_job through the loop's shared poll of this job (one poll per interval for all its
            # waiters); the rest of the hook (a cancel) is the hook's own; aclose leaves the poll
            hook = subscribe_job(hook, self.job_id, self.poll_interval)
        try:
            event = await self._wait(hook)
        except asyncio.CancelledError:
            stopping()  # the session it shares is logged out at once if this was its last user
            # Airflow 3.3+ calls on_kill() after this on a user's action; before 3.3 it is read here
            if self.cancel_on_kill and not TRIGGER_ON_KILL and await self._killed_by_user():
                await self._cancel_job(hook)
            raise
        finally:
            await hook.aclose()  # also on CancelledError: one bounded logout attempt
        self._ended = True
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    async def _wait(self, hook: Any) -> dict[str, Any]:
        from airflow_provider_backupjob.outage import Ended, Wait

        wait = Wait(
            self.job_id or "",
            poll_interval=self.poll_interval,
            max_outage=self.max_outage,
            deadline=self.deadline,
            log=self.log,
        )
        while True:  # bounded by the deadline and by max_outage
            try:
                answer = await self._resolve(hook)
            except VCenterError as err:
                answer = err
            if answer is None:  # selecting, and no job matches yet
                step = wait.nothing_yet()
            else:
                if self.job_id is None and not isinstance(answer, VCenterError):
                    wait.job_id = answer.id  # the wait follows the newest job the window selects
                step = wait.after(answer)
            if isinstance(step, Ended):
                return self._event(step)
            await asyncio.sleep(step)

    @functools.cached_property
    def _selector(self) -> JobSelector:
        """The window and type, parsed once for the wait (a bad one raises each time it is asked)."""
        from airflow_provider_backupjob.selection import JobSelector

        return JobSelector.parse(self.started_after, self.started_before, self.job_type)

    async def _resolve(self, hook: Any) -> Any:
        """The status to judge this poll: of the job id, or of the newest job the window selects
        (None while there is none)."""
        if self.job_id is not None:
            return await hook.get_job(self.job_id)
        selector = self._selector
        status = await hook.find_job(**selector.find_kwargs())
        self.log.info(selector.waiting_text if status is None else selector.chosen_text(status))
        return status

    def _event(self, ended: Any) -> dict[str, Any]:
        label = self.job_id or f"started after {self.started_after}"
        if ended.timed_out:
            return {
                "job_id": self.job_id,
                "status": "timeout",
                "message": ended.timeout_message(label, "timeout reached"),
            }
        if isinstance(ended.answer, VCenterError):
            return {"job_id": self.job_id, "status": "error", "error": ended.answer.to_event()}
        status = ended.answer
        return {"job_id": status.id, "status": "terminal", "job": status.to_dict()}

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user marked the deferred task failed or success, or cleared it."""
        if not self.cancel_on_kill or self._ended:
            return
        hook = self._hook()
        try:
            await self._cancel_job(hook)
        finally:
            await hook.aclose()

    async def _killed_by_user(self) -> bool:
        """Before Airflow 3.3: whether this cancellation is a user's kill, not a triggerer restart,
        a redistribution or a timeout. Only a task instance no longer DEFERRED says so; when the state
        cannot be read the job is left running (the wait's timeout still applies)."""
        from airflow_provider_backupjob.compat import task_instance_state

        if self.deadline is not None and time.time() >= self.deadline:
            return False  # timing out: the task's own timeout handling decides
        ti = getattr(self, "task_instance", None)
        if ti is None:
            return False
        try:
            state = await asyncio.wait_for(task_instance_state(ti), STATE_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - any failure to read the state means "do not cancel"
            self.log.warning(
                "Could not read the state of task %s (%s); backup job %s keeps running",
                getattr(ti, "task_id", "?"),
                err,
                self.job_id,
            )
            return False
        if state == "deferred":
            return False
        self.log.info("Task %s is %s: its deferred wait was killed", ti.task_id, state or "cleared")
        return True

    async def _cancel_job(self, hook: Any) -> None:
        """Cancel the job this task started. Logged; never raises."""
        self.log.warning("Cancelling backup job %s on vCenter: the deferred task was killed", self.job_id)
        try:
            result = await asyncio.wait_for(hook.cancel_job(self.job_id), CANCEL_TIMEOUT)
            self.log.warning("vCenter answered the cancel of backup job %s: %s", self.job_id, result.status)
        except (VCenterError, ValueError, asyncio.TimeoutError) as err:  # not the builtin one on 3.10
            self.log.error("Could not cancel backup job %s: %s", self.job_id, err)


# The event trigger lives in its own module; importable from here too, the documented path.
from airflow_provider_backupjob.triggers.backup_job_event import BackupJobEventTrigger  # noqa: E402

__all__ = ["BackupJobEventTrigger", "BackupJobTrigger"]
