"""One vCenter session per appliance and credentials in an event loop (the triggerer), shared by its hooks.

vCenter caps sessions per user (about 550): a thousand triggers each holding a session would eat the
cap every other client of that user needs. Here the hooks of one event loop that reach the same
appliance with the same user, password, TLS settings and API style share one :class:`SharedSession`:

- one login, single-flight: however many hooks ask at once, they all wait on the same login task,
  and a refused login (bad password, session cap) reaches every waiter as the same error;
- on a 401, the request's token is dropped only if it is still the current one, so a crowd hit by an
  expiry makes one login again, which all of them use;
- refcounted: when the last hook lets go the session lingers (at most ``linger`` seconds, one poll
  interval) for hooks arriving in turn, then logs out; a last user that is being cancelled (a
  triggerer shutting down) logs out at once.

Nothing here sends: logins and the logout run on a :class:`Holder` (a hook of a session of its own,
driven by the transport core like any other, which masks each new token), and each request of a user
runs on a :class:`~airflow_provider_backupjob.protocol.BorrowedSession` driven by that user's hook.
The token lives in this process's memory only; the key holds an HMAC of the password under a key
made at import, never the password.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import os
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from airflow_provider_backupjob.exceptions import VCenterApiError
from airflow_provider_backupjob.protocol import (
    BorrowedSession,
    Dialect,
    Exchange,
    SessionExpired,
    VCenterSession,
)
from airflow_provider_backupjob.retry import RetryPolicy
from airflow_provider_backupjob.settings import ConnectionSettings

T = TypeVar("T")
Drive = Callable[[VCenterSession], Awaitable[T]]
"""Run one exchange of a user in the session it is given (its hook's core does the sending)."""

ENV_SWITCH = "BACKUPJOB_SHARED_SESSIONS"  # "0": every trigger keeps its own session and polls itself
LOGOUT_TIMEOUT = 10.0
LINGER_MAX = 60.0  # a shared session lingers at most one poll interval, and never more than this
# a request gives up after being the first to see this many tokens refused: the others that share
# the session see the same expiries, and one expiry per request cycle is not the service failing
REFUSALS = 3
_STOPPING: contextvars.ContextVar[bool] = contextvars.ContextVar("backupjob_trigger_stopping", default=False)
_PASSWORD_KEY = os.urandom(32)  # per process: the fingerprints below mean nothing outside it


def sharing_enabled() -> bool:
    """Whether triggers share sessions and polls: yes unless ``BACKUPJOB_SHARED_SESSIONS=0``."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def linger_for(poll_interval: float) -> float | None:
    """A trigger hook's ``shared_session_linger``: one poll interval, at most LINGER_MAX; None
    (a session of its own) with sharing off."""
    return min(max(0.0, float(poll_interval)), LINGER_MAX) if sharing_enabled() else None


@dataclass(frozen=True)
class SessionKey:
    """What makes two hooks' sessions interchangeable. Safe to log: no password, no token."""

    base_url: str
    username: str
    password_hmac: str  # HMAC-SHA256 under a per-process random key: a rotated secret is another key
    tls: object  # the verify setting with the CA bundle's version (a renewed bundle is another key)
    api_style: str

    @classmethod
    def of(cls, settings: ConnectionSettings, tls: object) -> SessionKey:
        digest = hmac.new(_PASSWORD_KEY, settings.password.encode(), hashlib.sha256).hexdigest()
        return cls(settings.base_url, settings.username, digest, tls, settings.api_style)


class Holder(Protocol):
    """What a shared session logs in and out with: a hook of one session of its own (the password's),
    whose :meth:`run` drives exchanges through the transport core; :meth:`aclose` logs that session
    out (bounded, never raises) and lets go of its client."""

    async def run(
        self, operation: Callable[[VCenterSession], Exchange[T]], policy: RetryPolicy | None = None
    ) -> T: ...

    async def aclose(self, timeout: float = ...) -> None: ...


def _login(session: VCenterSession) -> Exchange[tuple[str, Dialect]]:
    """Log the holder's session in (again) and hand out what its users borrow."""
    yield from session.login()
    assert session.token is not None
    assert session.dialect is not None
    return session.token, session.dialect


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shared task's outcome as seen: its waiters may all have gone (cancelled)."""
    if not task.cancelled():
        task.exception()


class SharedSession:
    """One session of one appliance for every hook of one event loop with the same :class:`SessionKey`."""

    def __init__(self, registry: SharedSessions, key: SessionKey, holder: Holder):
        self.key = key
        self.users = 0
        self.logins = 0  # successful logins of this shared session (for tests and benchmarks)
        self._registry = registry
        self._holder = holder  # its session holds the password for logins; its token is the shared one
        self._lent: tuple[str, Dialect] | None = None  # the token and dialect of the last login
        self._generation = 0  # bumped by each login: which token a 401 was answered to
        self._valid = False
        self._login: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._linger = 0.0
        self._idle_since = 0.0
        self._closed = False

    def __repr__(self) -> str:
        state = "open" if self._valid else "closed"
        return f"SharedSession({self.key.username!r}@{self.key.base_url}, users={self.users}, {state})"

    # ---- the token ------------------------------------------------------------------------------
    async def _log_in(self) -> None:
        try:
            self._lent = await self._holder.run(_login)
            self._generation += 1
            self._valid = True
            self.logins += 1
        finally:
            self._login = None
            if self._closed:  # closed while this login was in flight (the loop ending): nobody uses it
                self._valid, self._lent = False, None
                await self._holder.aclose(LOGOUT_TIMEOUT)

    async def borrow(self) -> tuple[int, BorrowedSession]:
        """The current token (logging in first if there is none, one login for all who ask)."""
        for _ in range(3):  # bounded: another waiter's 401 may drop a fresh token before we see it
            if self._valid and self._lent is not None:
                return self._generation, BorrowedSession(*self._lent)  # one per run: 401s are its own
            if self._login is None:
                self._login = asyncio.get_running_loop().create_task(self._log_in())
                self._login.add_done_callback(_retrieve)
            await asyncio.shield(self._login)  # a waiter cancelled never cancels the login of the others
        raise VCenterApiError("vCenter dropped every new session before it could be used (HTTP 401)")

    def expired(self, generation: int) -> bool:
        """A request made with token ``generation`` got a 401: forget that token unless it is gone
        already (then the crowd that got the same 401 makes one login, not one each). True when
        this was the first news of its death."""
        if generation == self._generation and self._valid:
            self._valid = False  # the appliance no longer knows it: nothing to log out
            return True
        return False

    async def run(self, drive: Drive[T]) -> T:
        """``drive`` one exchange in a session on the shared token; on a 401, again on a new one.

        A 401 on a token some other user saw refused first is no news and costs no try; a request
        that is itself the first to see REFUSALS fresh tokens refused in a row gives up, as a lone
        session gives up on a 401 right after its login.
        """
        refused, limit = 0, REFUSALS if self.users > 1 else 2  # alone: one login again, as ever
        for _ in range(4 * REFUSALS):  # bounded
            generation, session = await self.borrow()
            try:
                return await drive(session)
            except SessionExpired:
                refused += self.expired(generation)
                if refused >= limit:
                    break
        raise VCenterApiError(
            "vCenter did not accept a fresh session (HTTP 401 right after a login)", status_code=401
        )

    # ---- users ----------------------------------------------------------------------------------
    def _acquire(self, linger: float) -> None:
        self.users += 1
        self._linger = linger if self.users == 1 and self._closer is None else min(self._linger, linger)

    async def release(self) -> None:
        """One user fewer; the last one out starts the linger (or logs out now if it is cancelled)."""
        self.users -= 1
        if self.users > 0:
            return
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        if _STOPPING.get() or _task_cancelling():  # the triggerer is stopping, or this trigger
            await self._close()
        elif self._closer is None:
            self._closer = loop.create_task(self._close_when_idle())

    async def _close_when_idle(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for _ in range(10_000):  # bounded: each turn sleeps until the latest release's linger ends
                if self.users > 0:
                    return
                left = self._idle_since + self._linger - loop.time()
                if left <= 0:
                    break
                await asyncio.sleep(left)
        finally:
            self._closer = None
            if self.users == 0:  # also when cancelled: the loop is ending, log out before it does
                await self._close()

    async def _close(self) -> None:
        """Log out, once. A cancellation (the loop ending) neither skips the logout nor is swallowed:
        it is raised again once the holder has logged out, or has been left to the login in flight,
        which logs its session out itself when it ends (see :meth:`_log_in`)."""
        if self._closed:
            return
        self._closed = True
        self._registry._forget(self)  # from now on a new user makes a new session
        login, cancelled = self._login, None
        if login is not None:
            try:
                await asyncio.wait_for(asyncio.shield(login), LOGOUT_TIMEOUT)
            except asyncio.CancelledError as err:
                cancelled = err
            except Exception:  # noqa: BLE001, S110 - a refused or failed login leaves nothing to log out
                pass
        self._valid, self._lent = False, None
        if login is None or login.done():
            await self._holder.aclose(LOGOUT_TIMEOUT)  # logs out the holder's session, if open
        if cancelled is not None:
            raise cancelled


class SharedSessions:
    """The shared sessions of each event loop, by :class:`SessionKey`."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[SessionKey, SharedSession]
        ] = weakref.WeakKeyDictionary()

    def _here(self) -> dict[SessionKey, SharedSession]:
        return self._by_loop.setdefault(asyncio.get_running_loop(), {})

    def open_sessions(self) -> list[SharedSession]:
        """The running loop's shared sessions (for tests and benchmarks)."""
        return list(self._here().values())

    def acquire(
        self, settings: ConnectionSettings, tls: object, holder: Callable[[], Holder], linger: float
    ) -> SharedSession:
        """The loop's session for these settings, made (without logging in yet) if there is none.

        ``holder`` is called only for a new session; ``linger`` is this user's poll interval.
        """
        key = SessionKey.of(settings, tls)
        here = self._here()
        shared = here.get(key)
        if shared is None:
            shared = here[key] = SharedSession(self, key, holder())
        shared._acquire(max(0.0, linger))
        return shared

    def _forget(self, shared: SharedSession) -> None:
        here = self._here()
        if here.get(shared.key) is shared:
            del here[shared.key]


shared_sessions = SharedSessions()


def stopping() -> None:
    """Say that the running task (a trigger) is being cancelled: a triggerer stopping or restarting,
    or a kill. A shared session it then releases as its last user logs out at once, not after the
    linger. Triggers call it themselves because Python 3.10 has no ``Task.cancelling()``."""
    _STOPPING.set(True)


def _task_cancelling() -> bool:
    cancelling = getattr(asyncio.current_task(), "cancelling", None)  # Python 3.11+
    return bool(cancelling is not None and cancelling())
