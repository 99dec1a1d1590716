"""Shared polls: triggers of one event loop waiting on the same job of the same appliance share its polls.

A trigger's fetch goes through :func:`subscribe_job`, which answers ``get_job`` like a hook:

- a poll in flight is joined (shielded: a subscriber cancelled never cancels or delays it);
- a status fetched by a poll that started less than the shortest subscriber's poll interval ago is
  answered again (one poll per interval, however many wait); an error is shared only with those
  who joined its poll, so a trigger riding out an outage always sees a poll of its own time;
- otherwise a new poll starts, on the poller's hook (its first subscriber's), which uses the loop's
  shared session.

Each trigger keeps its own loop, deadline, ``max_outage`` and outcome. The poller is refcounted:
when the last subscriber leaves, its poll in flight is cancelled and its hook closed.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_backupjob.hooks.shared_session import (
    LINGER_MAX,
    SessionKey,
    _retrieve,
    sharing_enabled,
)
from airflow_provider_backupjob.models import BackupJobStatus

if TYPE_CHECKING:
    from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook

CLOSE_TIMEOUT = 10.0  # how long a closing poller lets its cancelled poll unwind


class JobFetcher(Protocol):
    async def get_job(self, job_id: str) -> BackupJobStatus: ...

    async def aclose(self) -> None: ...


class _JobPoller:
    """The polls of one job of one appliance, for every subscriber in the loop."""

    def __init__(self, key: tuple[SessionKey, str], hook: AsyncBackupJobHook) -> None:
        self.key = key
        self.hook = hook
        self.polls = 0
        self.subscribers: dict[JobSubscription, float] = {}  # -> its poll interval
        self._shortest = 0.0  # the shortest of those intervals, kept as they join and leave
        self._inflight: asyncio.Task[BackupJobStatus] | None = None
        self._last: tuple[float, BackupJobStatus] | None = None  # when its poll started, the status

    def add(self, sub: JobSubscription) -> None:
        self._shortest = min(self._shortest, sub.interval) if self.subscribers else sub.interval
        self.subscribers[sub] = sub.interval

    def remove(self, sub: JobSubscription) -> None:
        if self.subscribers.pop(sub, None) is not None and self.subscribers:
            self._shortest = min(self.subscribers.values())  # once per leave, not on every fetch

    async def fetch(self) -> BackupJobStatus:
        loop = asyncio.get_running_loop()
        if self._inflight is None:
            now = loop.time()
            if self._last is not None and now - self._last[0] < self._shortest:
                return self._last[1]
            self._inflight = loop.create_task(self._poll(now))
            self._inflight.add_done_callback(_retrieve)
        return await asyncio.shield(self._inflight)

    async def _poll(self, started: float) -> BackupJobStatus:
        try:
            self.polls += 1
            status = await self.hook.get_job(self.key[1])
            self._last = (started, status)
            return status
        finally:
            self._inflight = None

    async def close(self) -> None:
        try:
            if self._inflight is not None:
                task = self._inflight
                task.cancel()  # nobody waits on it any more; let it unwind before its hook closes
                await asyncio.wait([task], timeout=CLOSE_TIMEOUT)
        finally:  # also when cancelled meanwhile: the hook lets go of its shared session
            await self.hook.aclose()


class _JobPollers:
    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[SessionKey, str], _JobPoller]
        ] = weakref.WeakKeyDictionary()

    def here(self) -> dict[tuple[SessionKey, str], _JobPoller]:
        """The running loop's pollers (for tests and benchmarks)."""
        return self._by_loop.setdefault(asyncio.get_running_loop(), {})

    def join(self, sub: JobSubscription, key: tuple[SessionKey, str]) -> _JobPoller:
        here = self.here()
        poller = here.get(key)
        if poller is None:
            # the first subscriber's hook (connection resolved, nothing sent yet) becomes the poller's,
            # on the loop's shared session; the poller closes it when its last subscriber leaves
            hook, sub.adopted = sub.hook, True
            hook.shared_session_linger = min(sub.interval, LINGER_MAX)
            poller = here[key] = _JobPoller(key, hook)
        poller.add(sub)
        return poller

    async def leave(self, sub: JobSubscription, poller: _JobPoller) -> None:
        poller.remove(sub)
        if poller.subscribers:
            return
        here = self.here()
        if here.get(poller.key) is poller:
            del here[poller.key]
        await poller.close()


job_pollers = _JobPollers()


class JobSubscription:
    """One trigger's view of the shared poll of its job; answers ``get_job`` and ``aclose`` like a hook.

    Joins on the first fetch, so that a missing or bad connection fails where a hook's fetch would.
    """

    def __init__(self, hook: AsyncBackupJobHook, job_id: str, interval: float) -> None:
        self.hook = hook
        self.job_id = job_id
        self.interval = max(float(interval), 0.0)
        self._poller: _JobPoller | None = None
        self.adopted = False  # the hook now serves the shared poll, which closes it

    async def get_job(self, job_id: str) -> BackupJobStatus:
        if job_id != self.job_id:  # this subscription polls one job; anything else goes to the hook
            return await self.hook.get_job(job_id)
        if self._poller is None:
            key = await self.hook.sharing_key()
            self._poller = job_pollers.join(self, (key, job_id))
        return await self._poller.fetch()

    async def aclose(self) -> None:
        try:
            if self._poller is not None:
                poller, self._poller = self._poller, None
                await job_pollers.leave(self, poller)
        finally:
            if not self.adopted:
                await self.hook.aclose()

    def __getattr__(self, name: str) -> Any:  # the rest of the hook's API (list_jobs, ...)
        return getattr(self.hook, name)


def subscribe_job(hook: AsyncBackupJobHook, job_id: str, interval: float) -> JobFetcher:
    """What a trigger fetches its job through: the shared poll, or the hook itself with sharing off."""
    return JobSubscription(hook, job_id, interval) if sharing_enabled() else hook
