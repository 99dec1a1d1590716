"""Injectable faults: an explicit queue plus a seeded random "chaos" mode. Pure, no I/O, no locking."""

from __future__ import annotations

import random
from dataclasses import dataclass

FAULT_KINDS: tuple[str, ...] = (
    "http_503_html",  # 503 text/html, an nginx "503 Service Temporarily Unavailable" page
    "http_503_json",  # 503 vAPI service_unavailable in the request's dialect
    "http_502_html",  # 502 text/html "502 Bad Gateway"
    "http_504_html",  # 504 text/html "504 Gateway Time-out"
    "http_500_json",  # 500 vAPI `error` in the request's dialect
    "drop",  # close the connection (FIN) without answering, before processing
    "reset_after_read",  # process the request fully, then RST the connection without answering
    "slow",  # sleep `delay` seconds, then process and answer normally
    "malformed_json",  # 200 application/json with a truncated body; not processed
    "expire_session",  # expire the request's session, then process (so it answers 401)
    "not_found",  # 404 vAPI not_found in the request's dialect; not processed
)


@dataclass
class Fault:
    kind: str
    method: str | None = None
    path_contains: str | None = None
    times: int = 1
    delay: float = 0.0

    def matches(self, method: str, target: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in target


def check_kind(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")


class FaultQueue:
    def __init__(self) -> None:
        self._queue: list[Fault] = []
        self._chaos_rate = 0.0
        self._chaos_rng = random.Random(0)  # noqa: S311 - test randomness, not secrets
        self._chaos_kinds: list[str] = list(FAULT_KINDS)
        self._chaos_delay = 0.0

    def pending(self) -> int:
        return sum(f.times for f in self._queue)

    def inject(
        self,
        kind: str,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> int:
        check_kind(kind)
        if int(times) < 1:
            raise ValueError("times must be >= 1")
        if float(delay) < 0:
            raise ValueError("delay must be >= 0")
        self._queue.append(Fault(kind, method, path_contains, int(times), float(delay)))
        return self.pending()

    def set_chaos(
        self, rate: float, seed: int = 0, kinds: list[str] | None = None, delay: float = 0.1
    ) -> None:
        chosen = list(FAULT_KINDS) if kinds is None else list(kinds)
        for k in chosen:
            check_kind(k)
        if not 0.0 <= float(rate) <= 1.0 or (rate and not chosen):
            raise ValueError("rate must be within [0, 1] and kinds non-empty")
        self._chaos_rate = float(rate)
        self._chaos_rng = random.Random(seed)  # noqa: S311
        self._chaos_kinds = chosen
        self._chaos_delay = float(delay)

    def clear(self) -> None:
        self._queue.clear()
        self._chaos_rate = 0.0

    def take(self, method: str, target: str, *, chaos_eligible: bool) -> Fault | None:
        """The first queued fault matching the request (consuming one use), else maybe a chaos fault."""
        for i, f in enumerate(self._queue):
            if f.matches(method, target):
                f.times -= 1
                if f.times <= 0:
                    del self._queue[i]
                return Fault(f.kind, delay=f.delay)
        if chaos_eligible and self._chaos_rate and self._chaos_rng.random() < self._chaos_rate:
            return Fault(self._chaos_rng.choice(self._chaos_kinds), delay=self._chaos_delay)
        return None
