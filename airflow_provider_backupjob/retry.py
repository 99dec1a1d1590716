"""The one retry policy both transports use (tenacity): transient failures only, bounded.

Transient means a :class:`VCenterUnavailableError`: connection refused or reset, a timeout, or a
502/503/504 answer (HTML or JSON). A request that is not idempotent (a backup start) is retried only
when it surely never reached the appliance (the connection was never made).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tenacity import retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential, wait_random

from airflow_provider_backupjob.exceptions import VCenterUnavailableError
from airflow_provider_backupjob.protocol import HttpRequest


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # in all, the first one included
    max_seconds: float = 60.0  # no new attempt starts after this much time
    initial_wait: float = 1.0
    max_wait: float = 15.0

    def tenacity_kwargs(self, req: HttpRequest) -> dict[str, Any]:
        """Arguments for ``tenacity.Retrying`` or ``tenacity.AsyncRetrying`` around sending ``req``."""

        def retryable(err: BaseException) -> bool:
            return isinstance(err, VCenterUnavailableError) and (req.idempotent or not err.request_sent)

        return {
            "retry": retry_if_exception(retryable),
            "stop": stop_after_attempt(self.attempts) | stop_after_delay(self.max_seconds),
            # exponential backoff plus up to one initial wait of jitter, so that many clients of one
            # appliance coming back from an outage do not retry in step
            "wait": wait_exponential(multiplier=self.initial_wait, max=self.max_wait)
            + wait_random(0, self.initial_wait),
            "reraise": True,
        }


NO_RETRY = RetryPolicy(attempts=1)
