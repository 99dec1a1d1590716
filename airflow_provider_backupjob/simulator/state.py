"""The simulated appliance's state: users, sessions, jobs, faults and counters. No I/O.

Every public method takes an internal lock, so the state can be driven from a test thread while the
server's event loop thread serves requests.
"""

from __future__ import annotations

import base64
import binascii
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .faults import Fault, FaultQueue
from .model import (
    ADMIN_USER,
    AUTHZ_INVALID,
    Job,
    JobScript,
    VapiError,
    iso_utc,
    job_type,
    message,
    new_job_id,
    normalize_message,
    unauthenticated,
    validate_backup_request,
)

DEFAULT_PASSWORD = "VMware1!sim"  # noqa: S105 - a simulator's well-known test password
READONLY_USER = "readonly@vsphere.local"
DEFAULT_USERS: dict[str, str] = {ADMIN_USER: DEFAULT_PASSWORD, READONLY_USER: DEFAULT_PASSWORD}
DEFAULT_UNPRIVILEGED: frozenset[str] = frozenset({READONLY_USER})


def job_type_of(value: Any) -> str:
    return job_type(value)


@dataclass
class Schedule:
    """A backup schedule: SCHEDULED jobs at ``first + k * interval``."""

    first: float
    interval: float
    outcomes: tuple[str, ...]
    run_seconds: float | None
    count: int | None
    made: int = 0

    @classmethod
    def make(
        cls,
        now: float,
        interval: float,
        outcomes: list[str] | None,
        run_seconds: float | None,
        first_in: float | None,
        count: int | None,
    ) -> Schedule:
        if interval <= 0:
            raise ValueError("interval must be > 0 seconds")
        chosen = tuple(str(o).upper() for o in (outcomes or ["SUCCEEDED"]))
        for outcome in chosen:
            JobScript(outcome)  # validates
        if run_seconds is not None and float(run_seconds) < 0:
            raise ValueError("run_seconds must be >= 0")
        if count is not None and int(count) < 0:
            raise ValueError("count must be >= 0")
        start = now + (interval if first_in is None else float(first_in))
        return cls(
            start,
            interval,
            chosen,
            None if run_seconds is None else float(run_seconds),
            None if count is None else int(count),
        )

    def due(self, now: float) -> list[tuple[float, str]]:
        """The (start time, outcome) of the jobs that should have started by ``now`` and have not."""
        out: list[tuple[float, str]] = []
        for _ in range(10_000):  # bounded: a long-idle simulator catches up at most this many
            if self.count is not None and self.made >= self.count:
                break
            start = self.first + self.made * self.interval
            if start > now:
                break
            out.append((start, self.outcomes[self.made % len(self.outcomes)]))
            self.made += 1
        return out

    def info(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "outcomes": list(self.outcomes),
            "run_seconds": self.run_seconds,
            "count": self.count,
            "made": self.made,
            "next_start": iso_utc(self.first + self.made * self.interval),
        }


@dataclass
class Session:
    token: str
    user: str
    created_wall: float
    last_access: float  # monotonic
    last_access_wall: float


class SimState:
    """All mutable state of one simulated appliance."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        unprivileged_users: Iterable[str] | None = None,
        session_cap: int = 550,
        idle_timeout: float = 1800.0,
        api_enabled: bool = True,
        start_script: JobScript | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.unprivileged = set(DEFAULT_UNPRIVILEGED if unprivileged_users is None else unprivileged_users)
        self.session_cap = session_cap
        self.idle_timeout = idle_timeout
        self.api_enabled = api_enabled
        self.start_script = start_script or JobScript()
        self._clock = clock
        self._wall = wallclock
        self._rng = random.Random(seed)  # noqa: S311 - ids, not secrets
        self._sessions: dict[str, Session] = {}
        self.issued_tokens: list[str] = []
        self._by_user: dict[str, set[str]] = {}
        self.jobs: dict[str, Job] = {}
        self.details_enabled = True
        self._schedule: Schedule | None = None
        self._faults = FaultQueue()
        self.reset_counters()

    # ---- counters -------------------------------------------------------------------------------
    def reset_counters(self) -> None:
        with self._lock:
            self.counters: Counter[str] = Counter()
            self.by_route: Counter[str] = Counter()
            self.by_dialect: Counter[str] = Counter()
            self.started_requests: list[dict[str, Any]] = []

    def count_request(self, route: str, dialect: str) -> None:
        with self._lock:
            self._run_schedule()
            self.counters["requests"] += 1
            self.by_route[route] += 1
            self.by_dialect[dialect] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._sweep()
            c = self.counters
            return {
                "logins": c["logins"],
                "login_failures": c["login_failures"],
                "logouts": c["logouts"],
                "open_sessions": len(self._sessions),
                "expired_sessions": c["expired_sessions"],
                "requests": c["requests"],
                "requests_by_route": dict(self.by_route),
                "requests_by_dialect": dict(self.by_dialect),
                "faults_injected": c["faults_injected"],
                "backups_started": c["backups_started"],
                "cancels": c["cancels"],
                "started_requests": [dict(r) for r in self.started_requests],
                "pending_faults": self._faults.pending(),
                "jobs": len(self.jobs),
                "scheduled_jobs": c["scheduled_jobs"],
            }

    # ---- configuration --------------------------------------------------------------------------
    def configure(
        self,
        *,
        api_enabled: bool | None = None,
        session_cap: int | None = None,
        idle_timeout: float | None = None,
        details_enabled: bool | None = None,
    ) -> None:
        with self._lock:
            if api_enabled is not None:
                self.api_enabled = bool(api_enabled)
            if details_enabled is not None:
                self.details_enabled = bool(details_enabled)
            if session_cap is not None:
                if int(session_cap) < 0:
                    raise ValueError("session_cap must be >= 0")
                self.session_cap = int(session_cap)
            if idle_timeout is not None:
                if float(idle_timeout) <= 0:
                    raise ValueError("idle_timeout must be > 0")
                self.idle_timeout = float(idle_timeout)

    def set_start_script(
        self,
        outcome: str = "SUCCEEDED",
        none_polls: int = 0,
        inprogress_polls: int = 3,
        end_time_null: bool = False,
    ) -> None:
        script = JobScript(outcome, int(none_polls), int(inprogress_polls), bool(end_time_null))
        with self._lock:
            self.start_script = script

    # ---- sessions -------------------------------------------------------------------------------
    def _drop(self, token: str, *, expired: bool) -> None:
        s = self._sessions.pop(token, None)
        if s is None:
            return
        toks = self._by_user.get(s.user)
        if toks is not None:
            toks.discard(token)
        if expired:
            self.counters["expired_sessions"] += 1

    def _is_idle(self, s: Session, now: float) -> bool:
        return now - s.last_access > self.idle_timeout

    def _sweep(self, user: str | None = None) -> None:
        now = self._clock()
        tokens = list(self._by_user.get(user, ())) if user is not None else list(self._sessions)
        for tok in tokens:
            if self._is_idle(self._sessions[tok], now):
                self._drop(tok, expired=True)

    def login(self, authorization: str | None) -> str:
        """Basic-auth login; answers a new token or raises unauthenticated / service_unavailable."""
        with self._lock:
            user = self._check_basic(authorization)
            if user is None:
                self.counters["login_failures"] += 1
                raise unauthenticated()
            self._sweep(user)
            if len(self._by_user.get(user, ())) >= self.session_cap:
                self.counters["login_failures"] += 1
                raise VapiError(
                    "service_unavailable",
                    [
                        message(
                            "com.vmware.vapi.endpoint.failedToLoginMaxUserSessionCountReached",
                            f"User session count is limited to {self.session_cap}",
                            [str(self.session_cap)],
                        )
                    ],
                )
            token = secrets.token_hex(16)
            now, wall = self._clock(), self._wall()
            self._sessions[token] = Session(token, user, wall, now, wall)
            self.issued_tokens.append(token)  # for tests that prove no token ever leaks
            self._by_user.setdefault(user, set()).add(token)
            self.counters["logins"] += 1
            return token

    def _check_basic(self, authorization: str | None) -> str | None:
        if not authorization or authorization[:6].lower() != "basic ":
            return None
        try:
            raw = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = raw.partition(":")
        if not sep or user not in self.users or not secrets.compare_digest(self.users[user], password):
            return None
        return user

    def authenticate(self, token: str | None, *, privileged: bool = False) -> Session:
        """The live session for `token` (touching it), or raise unauthenticated / unauthorized."""
        with self._lock:
            s = self._sessions.get(token) if token else None
            if s is None:
                raise unauthenticated()
            now = self._clock()
            if self._is_idle(s, now):
                self._drop(s.token, expired=True)
                raise unauthenticated()
            s.last_access, s.last_access_wall = now, self._wall()
            if privileged and s.user in self.unprivileged:
                raise VapiError("unauthorized", [AUTHZ_INVALID])
            return s

    def session_info(self, token: str | None) -> dict[str, Any]:
        with self._lock:
            s = self.authenticate(token)
            return {
                "user": s.user,
                "created_time": iso_utc(s.created_wall),
                "last_accessed_time": iso_utc(s.last_access_wall),
            }

    def logout(self, token: str | None) -> None:
        with self._lock:
            s = self.authenticate(token)
            self._drop(s.token, expired=False)
            self.counters["logouts"] += 1

    def expire_session(self, token: str | None) -> bool:
        with self._lock:
            if token and token in self._sessions:
                self._drop(token, expired=True)
                return True
            return False

    def expire_all_sessions(self) -> int:
        with self._lock:
            tokens = list(self._sessions)
            for tok in tokens:
                self._drop(tok, expired=True)
            return len(tokens)

    # ---- jobs -----------------------------------------------------------------------------------
    def _new_id(self, epoch: float | None = None) -> str:
        while True:
            jid = new_job_id(self._wall() if epoch is None else epoch, self._rng)
            if jid not in self.jobs:
                return jid

    def add_job(
        self,
        job_id: str | None = None,
        outcome: str = "SUCCEEDED",
        none_polls: int = 0,
        inprogress_polls: int = 3,
        end_time_null: bool = False,
        messages: list[dict[str, Any]] | list[str] | None = None,
        job_type: str = "MANUAL",
        started_ago: float = 0.0,
        run_seconds: float | None = None,
    ) -> str:
        """Add a job; ``started_ago`` seconds back (its id stamped with that time); ``run_seconds``:
        it runs by the clock rather than by polls."""
        script = JobScript(str(outcome), int(none_polls), int(inprogress_polls), bool(end_time_null))
        msgs = None if messages is None else [normalize_message(m) for m in messages]
        kind = job_type_of(job_type)
        if float(started_ago) < 0:
            raise ValueError("started_ago must be >= 0")
        with self._lock:
            start = self._wall() - float(started_ago)
            jid = job_id or self._new_id(start)
            self.jobs[jid] = Job(
                jid,
                script,
                start,
                terminal_messages=msgs,
                job_type=kind,
                run_seconds=None if run_seconds is None else float(run_seconds),
            )
            return jid

    # ---- the backup schedule ---------------------------------------------------------------------
    def set_schedule(
        self,
        interval: float | None,
        outcomes: list[str] | None = None,
        run_seconds: float | None = 2.0,
        first_in: float | None = None,
        count: int | None = None,
    ) -> None:
        """Start a SCHEDULED job every ``interval`` seconds (None: no schedule), the first after
        ``first_in`` (default: one interval); their outcomes cycle through ``outcomes``; each runs
        ``run_seconds`` by the clock (None: by polls, like added jobs); at most ``count`` jobs."""
        with self._lock:
            if interval is None:
                self._schedule = None
                return
            self._schedule = Schedule.make(
                self._wall(), float(interval), outcomes, run_seconds, first_in, count
            )

    def schedule_info(self) -> dict[str, Any] | None:
        with self._lock:
            self._run_schedule()
            return None if self._schedule is None else self._schedule.info()

    def _run_schedule(self) -> None:
        """Create the SCHEDULED jobs whose start time has come (lazily, on every request)."""
        plan = self._schedule
        if plan is None:
            return
        for start, outcome in plan.due(self._wall()):
            jid = self._new_id(start)
            self.jobs[jid] = Job(
                jid, JobScript(outcome, 0, 2), start, job_type="SCHEDULED", run_seconds=plan.run_seconds
            )
            self.counters["scheduled_jobs"] += 1

    def remove_job(self, job_id: str) -> bool:
        with self._lock:
            return self.jobs.pop(job_id, None) is not None

    def job_state(self, job_id: str) -> str | None:
        with self._lock:
            job = self.jobs.get(job_id)
            return None if job is None else job.state_now(self._wall())

    def job_info(self, job_id: str) -> dict[str, Any] | None:
        """Status (without counting a poll) plus `polls`, `gets` and the start request, for tests."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            return {
                "status": job.status(self._wall()),
                "polls": job.polls,
                "gets": job.gets,
                "request": job.request,
            }

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise VapiError(
                "not_found",
                [
                    message(
                        "com.vmware.applmgmt.backup.job.not_found",
                        "Backup job {0} does not exist.",
                        [job_id],
                    )
                ],
            )
        return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            return self._job(job_id).poll(self._wall())

    def list_jobs(self) -> list[str]:
        with self._lock:
            self._run_schedule()
            return sorted(self.jobs, reverse=True)

    def job_details(self, job_ids: Iterable[str] | None) -> dict[str, dict[str, Any]]:
        """Details of the given jobs (all if None); 404 not_found where the appliance has none
        (``details_enabled=False``: vCenter 6.5) or for an unknown id."""
        with self._lock:
            if not self.details_enabled:
                raise VapiError(
                    "not_found",
                    [
                        message(
                            "vapi.method.input.invalid.interface",
                            "Cannot find service 'com.vmware.appliance.recovery.backup.job.details'.",
                        )
                    ],
                )
            self._run_schedule()
            ids = list(self.jobs) if job_ids is None else list(dict.fromkeys(job_ids))
            return {jid: self._job(jid).details(self._wall()) for jid in ids}

    def start_backup(self, piece: Any) -> dict[str, Any]:
        request = validate_backup_request(piece)
        with self._lock:
            if any(not j.terminal_at(self._wall()) for j in self.jobs.values()):
                raise VapiError(
                    "feature_in_use",
                    [
                        message(
                            "com.vmware.applmgmt.backup.job.feature_in_use",
                            "A backup or restore is already in progress.",
                        )
                    ],
                )
            jid = self._new_id()
            job = Job(jid, self.start_script, self._wall(), request=request, job_type="MANUAL")
            self.jobs[jid] = job
            self.counters["backups_started"] += 1
            self.started_requests.append(dict(request))
            return job.status(self._wall())

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            if job.terminal_at(self._wall()):
                raise VapiError(
                    "not_allowed_in_current_state",
                    [
                        message(
                            "com.vmware.applmgmt.backup.job.cancel.not_allowed",
                            "Backup job {0} is not running and cannot be canceled.",
                            [job_id],
                        )
                    ],
                )
            job.cancel(self._wall())
            self.counters["cancels"] += 1
            return {
                "status": "OK",
                "messages": [
                    message(
                        "com.vmware.applmgmt.backup.job.cancel.success",
                        "Cancel of backup job {0} requested.",
                        [job_id],
                    )
                ],
            }

    # ---- faults ---------------------------------------------------------------------------------
    def inject(
        self,
        kind: str,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> int:
        """Queue a fault; answers the number of pending fault uses."""
        with self._lock:
            return self._faults.inject(
                kind, method=method, path_contains=path_contains, times=times, delay=delay
            )

    def set_chaos(
        self, rate: float, seed: int = 0, kinds: list[str] | None = None, delay: float = 0.1
    ) -> None:
        with self._lock:
            self._faults.set_chaos(rate, seed, kinds, delay)

    def clear_faults(self) -> None:
        """Drop pending faults and turn chaos off."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, method: str, target: str, *, is_login_or_logout: bool) -> Fault | None:
        """The fault (if any) this request suffers; consumes it and counts it."""
        with self._lock:
            fault = self._faults.take(method, target, chaos_eligible=not is_login_or_logout)
            if fault is not None:
                self.counters["faults_injected"] += 1
            return fault
