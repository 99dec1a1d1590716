"""BackupJobTrigger: wait for a backup job in the triggerer, asynchronously."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_backupjob.exceptions import VCenterError, VCenterUnavailableError
from airflow_provider_backupjob.settings import DEFAULT_CONN_ID

# vCenter's reverse proxy closes idle connections after a while; past this, reconnecting is cheaper
# than holding thousands of idle sockets.
KEEPALIVE_MAX = 120.0


class BackupJobTrigger(BaseTrigger):
    """
    Poll a backup job until it ends, the deadline passes, or an outage outlasts ``max_outage``.

    Its kwargs are JSON primitives and hold no secret: the connection is looked up in the triggerer.
    One session serves the whole wait and is logged out when the trigger ends, fails or is cancelled.
    Events (all carry ``job_id``):

    - ``{"status": "terminal", "job": <status dict>}``: the job SUCCEEDED or FAILED;
    - ``{"status": "error", "error": <error dict>}``: vCenter said no (404, auth, bad answer, outage);
    - ``{"status": "timeout", "message": ...}``: ``deadline`` (epoch seconds) passed first.

    Without ``job_id`` it selects the job each poll: the newest started in ``[started_after,
    started_before)`` (ISO 8601 strings) of ``job_type``, waiting while there is none; its events
    then carry the chosen job's id.

    :param poll_interval: seconds between polls (the sensor's ``poke_interval``).
    :param max_outage: seconds the appliance may stay unreachable before an error event.
    """

    def __init__(
        self,
        job_id: str | None = None,
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        deadline: float | None = None,
        max_outage: float = 600.0,
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

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "job_id": self.job_id,
            "vcenter_conn_id": self.vcenter_conn_id,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline,
            "max_outage": self.max_outage,
        }
        if self.job_id is None:
            kwargs.update(
                started_after=self.started_after, started_before=self.started_before, job_type=self.job_type
            )
        return (f"{type(self).__module__}.{type(self).__qualname__}", kwargs)

    async def _resolve(self, hook: Any) -> Any:
        """The status to judge this poll: of the job id, or of the newest job the window selects
        (None while there is none)."""
        if self.job_id is not None:
            return await hook.get_job(self.job_id)
        from airflow_provider_backupjob.selection import JobSelector

        selector = JobSelector.parse(self.started_after, self.started_before, self.job_type)
        status = await hook.find_job(**selector.find_kwargs())
        self.log.info(selector.waiting_text if status is None else selector.chosen_text(status))
        return status

    def _hook(self) -> Any:
        from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook
        from airflow_provider_backupjob.waiting import poll_retry_policy

        return AsyncBackupJobHook(
            self.vcenter_conn_id,
            retry_policy=poll_retry_policy(self.poll_interval),
            keepalive_expiry=min(self.poll_interval + 15.0, KEEPALIVE_MAX),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        try:
            event = await self._wait(hook)
        finally:
            await hook.aclose()  # also on CancelledError: one bounded logout attempt
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    def _left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()

    async def _wait(self, hook: Any) -> dict[str, Any]:
        from airflow_provider_backupjob.outage import OutageTracker

        base: dict[str, Any] = {"job_id": self.job_id}
        label = self.job_id or f"started after {self.started_after}"
        outage = OutageTracker(self.max_outage)
        while True:  # bounded by the deadline and by max_outage
            if self._left() <= 0:
                return {
                    **base,
                    "status": "timeout",
                    "message": f"timed out waiting for backup job {label} (sensor timeout reached)",
                }
            pause = self.poll_interval
            try:
                status = await self._resolve(hook)
                outage.succeeded()
            except VCenterUnavailableError as err:
                try:
                    pause = min(pause, outage.failed(err))
                except VCenterUnavailableError as final:
                    return {**base, "status": "error", "error": final.to_event()}
                self.log.warning("vCenter unavailable (%s); trying again in %.1f s", err, pause)
            except VCenterError as err:
                return {**base, "status": "error", "error": err.to_event()}
            else:
                if status is not None:
                    if status.is_terminal:
                        return {**base, "job_id": status.id, "status": "terminal", "job": status.to_dict()}
                    self.log.info(status.progress_text)
            # a little jitter, so triggers that started together (a triggerer taking on a backlog) do
            # not keep polling in one burst per interval
            pause += random.uniform(0, min(0.05 * pause, 1.0))  # noqa: S311
            await asyncio.sleep(max(0.0, min(pause, self._left())))


# The event trigger lives in its own module; importable from here too, the documented path.
from airflow_provider_backupjob.triggers.backup_job_event import BackupJobEventTrigger  # noqa: E402

__all__ = ["BackupJobEventTrigger", "BackupJobTrigger"]
