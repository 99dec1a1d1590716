"""The rules of a wait, written once for every waiter: how long the appliance may stay unreachable
(``max_outage``), when the wait's deadline ends it, and how long to pause between polls.

Sans-IO: :class:`Wait` is told what each fetch answered and says what comes next; the sensor's
``poke``, the operator's wait and the trigger only fetch and sleep (sync or async) around it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_backupjob.exceptions import VCenterError, VCenterUnavailableError
from airflow_provider_backupjob.models import BackupJobStatus

Answer = BackupJobStatus | VCenterError
"""What one fetch of a job gave: its status, or the error it raised."""


class OutageTracker:
    """Measures one continuous outage.

    ``failed`` returns the seconds still allowed, or raises a :class:`VCenterUnavailableError` naming
    the outage's length and the last error once it has lasted ``max_outage`` seconds.
    """

    def __init__(self, max_outage: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_outage = max_outage
        self._clock = clock
        self._since: float | None = None

    def succeeded(self) -> None:
        self._since = None

    def failed(self, err: VCenterUnavailableError) -> float:
        now = self._clock()
        if self._since is None:
            self._since = now
        lasted = now - self._since
        if lasted >= self.max_outage:
            raise VCenterUnavailableError(
                f"vCenter has been unreachable for {lasted:.0f} s, longer than max_outage "
                f"({self.max_outage:g} s); last error: {err.detail}",  # the context once, below
                host=err.host,
                job_id=err.job_id,
                status_code=err.status_code,
                vcenter_messages=err.vcenter_messages,
            ) from err
        return self.max_outage - lasted


@dataclass(frozen=True)
class Ended:
    """How a wait ended: with ``answer`` (a terminal status of the job, another job's status, or an
    error that is not an outage, or an outage longer than ``max_outage``), or, when ``answer`` is
    None, at its deadline; ``outage`` is then the last failure if the appliance was unreachable."""

    answer: Answer | None
    outage: VCenterUnavailableError | None = None

    @property
    def timed_out(self) -> bool:
        return self.answer is None

    def timeout_message(self, job_id: str, why: str) -> str:
        text = f"timed out waiting for backup job {job_id} ({why})"
        if self.outage is not None:
            text += f" while vCenter was unreachable; last error: {self.outage.args[0]}"
        return text


class Wait:
    """One wait for ``job_id``: call :meth:`after` with what each fetch answered; it returns the
    seconds to pause before the next fetch, or :class:`Ended`.

    An outage (a :class:`VCenterUnavailableError`) is ridden out for up to ``max_outage`` seconds,
    measured across fetches, pausing at most ``poll_interval`` and never past the outage's end. With a
    ``deadline`` (epoch seconds), a wait still going at the deadline ends timed out, outage or not:
    riding out an outage never outlasts it. A terminal answer wins even past the deadline.
    """

    def __init__(
        self,
        job_id: str,
        *,
        poll_interval: float,
        max_outage: float,
        deadline: float | None = None,
        log: Any,
        clock: Callable[[], float] = time.time,
        outage_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id = job_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.outage = OutageTracker(max_outage, outage_clock)
        self._log = log
        self._clock = clock
        self._last_outage: VCenterUnavailableError | None = None

    def left(self) -> float:
        """Seconds to the deadline (infinite without one)."""
        return float("inf") if self.deadline is None else self.deadline - self._clock()

    def after(self, answer: Answer) -> float | Ended:
        if isinstance(answer, VCenterUnavailableError):
            try:
                pause = min(self.poll_interval, self.outage.failed(answer))
            except VCenterUnavailableError as final:
                return Ended(final)
            self._last_outage = answer
            self._log.warning("vCenter unavailable (%s); trying again in %.1f s", answer, pause)
        elif isinstance(answer, VCenterError) or answer.is_terminal or answer.id != self.job_id:
            return Ended(answer)
        else:
            self._log.info(answer.progress_text)
            return self.nothing_yet()
        return self._pause(pause)

    def nothing_yet(self) -> float | Ended:
        """The appliance answered, with nothing to judge yet (a job still running, or a selection
        that matched no job): the outage, if any, is over; pause a poll interval."""
        self.outage.succeeded()
        self._last_outage = None
        return self._pause(self.poll_interval)

    def _pause(self, pause: float) -> float | Ended:
        left = self.left()
        if left <= 0:
            return Ended(None, self._last_outage)
        # a little jitter, so waits that started together (a triggerer taking on a backlog, many
        # clients back from an outage) do not keep polling in one burst per interval
        pause += random.uniform(0, min(0.05 * pause, 1.0))  # noqa: S311
        return max(0.0, min(pause, left))


def fetch(get: Callable[[str], BackupJobStatus], job_id: str) -> Answer:
    """One synchronous fetch, its error as a value."""
    try:
        return get(job_id)
    except VCenterError as err:
        return err


def wait_in_worker(wait: Wait, get: Callable[[str], BackupJobStatus]) -> Ended:
    """Drive ``wait`` in this process: fetch with ``get``, sleep between fetches, until it ends."""
    for _ in range(10_000_000):  # bounded: every round sleeps, and the deadline or an answer ends it
        step = wait.after(fetch(get, wait.job_id))
        if isinstance(step, Ended):
            return step
        time.sleep(step)
    raise RuntimeError("wait loop exhausted")  # pragma: no cover
