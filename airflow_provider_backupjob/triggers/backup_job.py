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

    :param poll_interval: seconds between polls (the sensor's ``poke_interval``).
    :param max_outage: seconds the appliance may stay unreachable before an error event.
    """

    def __init__(
        self,
        job_id: str,
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        deadline: float | None = None,
        max_outage: float = 600.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.job_id = job_id
        self.vcenter_conn_id = vcenter_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = None if deadline is None else float(deadline)
        self.max_outage = float(max_outage)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "vcenter_conn_id": self.vcenter_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "max_outage": self.max_outage,
            },
        )

    def _hook(self) -> Any:
        from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook
        from airflow_provider_backupjob.waiting import poll_retry_policy

        return AsyncBackupJobHook(
            self.vcenter_conn_id,
            retry_policy=poll_retry_policy(self.poll_interval),
            keepalive_expiry=min(self.poll_interval + 15.0, KEEPALIVE_MAX),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_backupjob.hooks.shared_poll import subscribe_job

        # get_job goes through the loop's shared poll of this job (one session per appliance, one
        # poll per interval for all its waiters); aclose leaves it and closes the hook
        hook = subscribe_job(self._hook(), self.job_id, self.poll_interval)
        try:
            event = await self._wait(hook)
        finally:
            await hook.aclose()  # also on CancelledError: one bounded logout attempt
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    def _left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()

    async def _wait(self, hook: Any) -> dict[str, Any]:
        from airflow_provider_backupjob.outage import OutageTracker

        base = {"job_id": self.job_id}
        outage = OutageTracker(self.max_outage)
        while True:  # bounded by the deadline and by max_outage
            if self._left() <= 0:
                return {
                    **base,
                    "status": "timeout",
                    "message": f"timed out waiting for backup job {self.job_id} (sensor timeout reached)",
                }
            pause = self.poll_interval
            try:
                status = await hook.get_job(self.job_id)
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
                if status.is_terminal:
                    return {**base, "status": "terminal", "job": status.to_dict()}
                self.log.info(status.progress_text)
            # a little jitter, so triggers that started together (a triggerer taking on a backlog) do
            # not keep polling in one burst per interval
            pause += random.uniform(0, min(0.05 * pause, 1.0))  # noqa: S311
            await asyncio.sleep(max(0.0, min(pause, self._left())))
