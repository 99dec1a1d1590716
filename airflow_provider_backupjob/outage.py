"""How long an appliance may stay unreachable before a wait gives up: one rule for every waiter."""

from __future__ import annotations

import time
from collections.abc import Callable

from airflow_provider_backupjob.exceptions import VCenterUnavailableError


class OutageTracker:
    """Measures one continuous outage; the sensor and the trigger both keep waiting through it.

    ``failed`` returns the seconds still allowed, or raises a :class:`VCenterUnavailableError` naming
    the outage's length and the last error once it has lasted ``max_outage`` seconds.
    """

    def __init__(self, max_outage: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_outage = max_outage
        self._clock = clock
        self._since: float | None = None

    @property
    def in_outage(self) -> bool:
        return self._since is not None

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
