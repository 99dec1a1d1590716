"""BackupJobEventTrigger: an asset watcher that fires once for each backup job that ends.

Use it in an ``AssetWatcher`` to schedule a DAG on "a backup succeeded". It never fires just because
the newest job is in a success state (that would schedule the DAG forever): at start it takes a
*watermark* (the newest job id and the jobs still running), and fires only for jobs that reach one
of ``states`` after that. The watermark is kept in Airflow 3.3's asset state store, so a triggerer
restart resumes where it was, without firing twice.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_backupjob.exceptions import VCenterConfigError, VCenterError, VCenterUnavailableError
from airflow_provider_backupjob.models import BackupJobState, BackupJobStatus, JobType
from airflow_provider_backupjob.protocol import Exchange, VCenterSession, job_id_time
from airflow_provider_backupjob.settings import DEFAULT_CONN_ID

STATE_KEY = "vcenter_backup_watermark"
WATCH_BATCH = 20  # new jobs taken up per poll (more wait for the next poll): one details request
MAX_OPEN = 16  # running jobs remembered; vCenter runs one backup at a time
MAX_FAILURES = 5  # consecutive polls refused for good (auth, certificate, ...) before the watcher ends


def _stamp(job_id: str) -> str:
    """The part of an id that orders it: its time stamp (``20170717-132629``), else the whole id.
    Two jobs of one second share it, and their suffixes do not tell which came first."""
    return job_id[:15] if job_id_time(job_id) is not None else job_id


@dataclass(frozen=True)
class Watermark:
    """What the watcher has seen: the newest time stamp with the ids seen at it, and the jobs up to
    it that had not ended."""

    newest: str = ""
    open: tuple[str, ...] = field(default_factory=tuple)
    seen: tuple[str, ...] = field(default_factory=tuple)  # ids at the newest stamp

    def is_new(self, job_id: str) -> bool:
        stamp = _stamp(job_id)
        return stamp > self.newest or (stamp == self.newest and job_id not in self.seen)

    def after(self, ids: Sequence[str], opened: Sequence[str]) -> Watermark:
        """This mark moved past ``ids`` (every one seen), with ``opened`` still running."""
        newest = max([self.newest, *(_stamp(i) for i in ids)])
        seen = {i for i in (*self.seen, *ids) if _stamp(i) == newest}
        return Watermark(newest, tuple(sorted(opened)[-MAX_OPEN:]), tuple(sorted(seen)[-MAX_OPEN:]))

    def to_json(self) -> dict[str, Any]:
        return {"newest": self.newest, "open": list(self.open), "seen": list(self.seen)}

    @classmethod
    def from_json(cls, value: Any) -> Watermark | None:
        if not isinstance(value, dict) or not isinstance(value.get("newest"), str):
            return None
        lists = [value.get("open"), value.get("seen", [])]
        if not all(isinstance(x, list) and all(isinstance(i, str) for i in x) for x in lists):
            return None
        return cls(value["newest"], tuple(lists[0]), tuple(lists[1]))


def watch_step(
    session: VCenterSession, mark: Watermark | None, *, need_type: bool
) -> Exchange[tuple[Watermark, list[BackupJobStatus]]]:
    """One poll: the jobs that ended since ``mark`` (oldest first) and the new watermark.

    Without a mark (first start) it only takes one: what has ended already never fires. Two
    requests a poll (the job list, the details of the open and new jobs; on vCenter 6.5 one GET
    per such job), however many jobs the appliance keeps. Job ids sort by their time stamp.
    """
    ids = set((yield from session.list_jobs()))
    if mark is None:
        recent = sorted(ids, reverse=True)[:WATCH_BATCH]
        statuses = yield from session.job_statuses(recent, need_type=need_type)
        started = {s.id for s in statuses}
        opened = [s.id for s in statuses if not s.is_terminal] + [i for i in recent if i not in started]
        return Watermark().after(sorted(ids), opened), []
    new = sorted((i for i in ids if mark.is_new(i)), key=lambda i: (_stamp(i), i))[:WATCH_BATCH]
    ask = sorted({*(i for i in mark.open if i in ids), *new})
    statuses = yield from session.job_statuses(ask, need_type=need_type) if ask else _nothing()
    by_id = {s.id: s for s in statuses}
    ended = [by_id[i] for i in ask if i in by_id and by_id[i].is_terminal]
    still_open = [i for i in ask if i not in by_id or not by_id[i].is_terminal]  # not started yet: open
    return mark.after(new, still_open), ended


def _nothing() -> Exchange[list[BackupJobStatus]]:
    return []
    yield  # pragma: no cover - makes this a generator


class BackupJobEventTrigger(BaseEventTrigger):
    """
    Fire an event for each backup job that reaches one of ``states`` after the watcher started.

    The payload is the job's status dict (``id``, ``state``, ``start_time``, ``end_time``, and with
    details ``type``, ``size``, ``duration``, ``location``), JSON-safe; an asset event carries it as
    ``extra["payload"]``. Outages are ridden out; an appliance that refuses every poll for good
    (bad credentials, privilege, certificate) ends the watcher with that error after
    ``MAX_FAILURES`` polls in a row. Its kwargs are JSON primitives without secrets.

    :param vcenter_conn_id: a ``vcenter_backup`` connection.
    :param states: the end states that fire: ``SUCCEEDED`` and/or ``FAILED``.
    :param job_type: ``SCHEDULED``, ``MANUAL`` or None (any); needs job details (vCenter 6.7+).
    :param poll_interval: seconds between polls.
    """

    def __init__(
        self,
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        states: Sequence[str] = ("SUCCEEDED",),
        job_type: str | None = None,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if isinstance(states, str):
            states = [states]
        chosen = sorted({str(s).upper() for s in states})
        allowed = {BackupJobState.SUCCEEDED.value, BackupJobState.FAILED.value}
        if not chosen or not set(chosen) <= allowed:
            raise ValueError(
                f"states must be a non-empty subset of SUCCEEDED and FAILED, not {list(states)!r}"
            )
        kind = JobType.parse(job_type)
        if float(poll_interval) <= 0:
            raise ValueError("poll_interval must be > 0 seconds")
        self.vcenter_conn_id = vcenter_conn_id
        self.states = tuple(chosen)
        self.job_type = None if kind is None else kind.value
        self.poll_interval = float(poll_interval)
        self.mark: Watermark | None = None  # after run() polled once: what it has seen

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Airflow keys watchers by the hash of these: sorted, normalised, primitives only.
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "vcenter_conn_id": self.vcenter_conn_id,
                "states": list(self.states),
                "job_type": self.job_type,
                "poll_interval": self.poll_interval,
            },
        )

    def _hook(self) -> Any:
        from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook
        from airflow_provider_backupjob.hooks.shared_session import linger_for
        from airflow_provider_backupjob.triggers.backup_job import KEEPALIVE_MAX
        from airflow_provider_backupjob.waiting import poll_retry_policy

        return AsyncBackupJobHook(  # on the loop's shared session of its appliance, as BackupJobTrigger
            self.vcenter_conn_id,
            retry_policy=poll_retry_policy(self.poll_interval),
            keepalive_expiry=min(self.poll_interval + 15.0, KEEPALIVE_MAX),
            shared_session_linger=linger_for(self.poll_interval),
        )

    # ---- the watermark in the asset state store (Airflow 3.3) ---------------------------------------
    async def _load(self) -> Watermark | None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return None
        try:
            return Watermark.from_json(await store.aget(STATE_KEY))
        except ValueError as err:  # a watcher shared by several assets: no single accessor
            self.log.warning("Cannot read the backup watermark from the asset state store: %s", err)
            return None

    async def _save(self, mark: Watermark) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return
        try:
            await store.aset(STATE_KEY, mark.to_json())
        except ValueError as err:
            self.log.warning("Cannot keep the backup watermark in the asset state store: %s", err)

    # ---- the loop ---------------------------------------------------------------------------------------
    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        try:
            self.mark = await self._load()
            if self.mark is not None:
                self.log.info("Resuming from the stored watermark: newest job %s", self.mark.newest or "none")
            failures = 0
            while True:  # a watcher runs until Airflow cancels it or the appliance refuses for good
                try:
                    mark, ended = await hook.run(
                        lambda s: watch_step(s, self.mark, need_type=self.job_type is not None)
                    )
                    failures = 0
                except VCenterUnavailableError as err:
                    self.log.warning(
                        "vCenter unavailable (%s); trying again in %.0f s", err, self.poll_interval
                    )
                except VCenterConfigError:
                    raise  # e.g. job_type on an appliance without details: no poll can succeed
                except VCenterError as err:
                    failures += 1
                    if failures >= MAX_FAILURES:
                        raise VCenterError(
                            f"the backup watcher gave up after {failures} refused polls in a row: {err}"
                        ) from None
                    self.log.warning("Backup watcher poll failed (%d of %d): %s", failures, MAX_FAILURES, err)
                else:
                    fire = [s for s in ended if s.state.value in self.states and self._type_matches(s)]
                    first = self.mark is None
                    self.mark = mark
                    await self._save(mark)  # before firing: a restart never fires a job twice
                    if first:
                        self.log.info("Watching backup jobs after %s", mark.newest or "none yet")
                    for status in fire:
                        self.log.info("Backup job %s reached %s", status.id, status.state.value)
                        yield TriggerEvent(status.to_dict())  # type: ignore[no-untyped-call]
                pause = self.poll_interval + random.uniform(0, min(0.05 * self.poll_interval, 1.0))  # noqa: S311
                await asyncio.sleep(pause)
        except asyncio.CancelledError:
            from airflow_provider_backupjob.hooks.shared_session import stopping

            stopping()  # the session it shares is logged out at once if this was its last user
            raise
        finally:
            await hook.aclose()

    def _type_matches(self, status: BackupJobStatus) -> bool:
        if self.job_type is None:
            return True
        return status.details is not None and status.details.type.value == self.job_type
