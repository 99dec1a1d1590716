"""The one retry policy both transports use (tenacity): transient failures only, bounded.

Transient means a :class:`VCenterUnavailableError`: connection refused or reset, a timeout, or a
502/503/504 answer (HTML or JSON). A request that is not idempotent (a backup start) is retried only
when it surely never reached the appliance (the connection was never made).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tenacity import retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential, wait_random

from airflow_provider_backupjob.exceptions import VCenterUnavailableError
from airflow_provider_backupjob.protocol import HttpRequest


@dataclass(frozen=True)
class RetryPolicy:
    """How one request is retried: up to ``attempts`` in all, none started after ``max_seconds``,
    waiting ``initial_wait`` (doubling, at most ``max_wait``) plus jitter between them.

    The first attempt is sent by the transport itself; tenacity takes over only after a retryable
    failure (:meth:`retries_after`). Entering tenacity for every request cost the trigger about 80
    garbage-collected objects a poll (benchmarks/trigger_scale.py), for nothing on the happy path.
    """

    attempts: int = 4  # in all, the first one included
    max_seconds: float = 60.0  # no new attempt starts after this much time
    initial_wait: float = 1.0
    max_wait: float = 15.0

    def retryable(self, req: HttpRequest, err: BaseException) -> bool:
        return isinstance(err, VCenterUnavailableError) and (req.idempotent or not err.request_sent)

    def retries_after(self, req: HttpRequest, err: BaseException) -> dict[str, Any] | None:
        """Arguments for ``tenacity.Retrying`` / ``AsyncRetrying`` for the attempts left after the
        first one failed with ``err``, or None when ``err`` is not to be retried.

        The caller sleeps :meth:`first_wait` before entering tenacity (which never waits before its
        own first attempt), so the waits run initial, 2 x initial, 4 x initial... plus jitter.
        """
        if self.attempts <= 1 or not self.retryable(req, err):
            return None
        return {
            "retry": retry_if_exception(lambda e: self.retryable(req, e)),
            "stop": stop_after_attempt(self.attempts - 1) | stop_after_delay(self.max_seconds),
            # jitter, so that many clients of one appliance coming back from an outage do not retry in step
            "wait": wait_exponential(multiplier=2 * self.initial_wait, max=self.max_wait)
            + wait_random(0, self.initial_wait),
            "reraise": True,
        }

    def first_wait(self) -> float:
        return min(self.initial_wait, self.max_wait) + random.uniform(0, self.initial_wait)  # noqa: S311


NO_RETRY = RetryPolicy(attempts=1)
