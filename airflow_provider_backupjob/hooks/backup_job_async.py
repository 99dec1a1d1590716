"""AsyncBackupJobHook: the asynchronous shell around the sans-IO protocol, over ``httpx``.

Used by the trigger in the triggerer's event loop: every call awaits, nothing blocks, no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.cookiejar
import logging
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from airflow_provider_backupjob.compat import aget_connection
from airflow_provider_backupjob.exceptions import VCenterError
from airflow_provider_backupjob.hooks._transport import (
    LOGOUT_POLICY,
    CoreOwner,
    Failure,
    FailureTable,
    Probe,
    Send,
    TransportCore,
    peer_names,
)
from airflow_provider_backupjob.hooks.shared_session import SessionKey, SharedSession, shared_sessions
from airflow_provider_backupjob.models import (
    BackupJobDetails,
    BackupJobStatus,
    BackupRequest,
    CancelResult,
    JobType,
)
from airflow_provider_backupjob.protocol import Exchange, HttpRequest, HttpResponse, VCenterSession
from airflow_provider_backupjob.retry import RetryPolicy
from airflow_provider_backupjob.settings import (
    DEFAULT_CONN_ID,
    ConnectionSettings,
    tls_context,
    trust_version,
)

T = TypeVar("T")

HTTPX_FAILURES: FailureTable = (
    (httpx.ConnectTimeout, Failure.CONNECT_TIMEOUT),
    ((httpx.ConnectError, httpx.PoolTimeout), Failure.CONNECT),
    (httpx.TimeoutException, Failure.READ_TIMEOUT),
    ((httpx.NetworkError, httpx.RemoteProtocolError), Failure.DROPPED),
)


# Hooks that share one client. httpcore's pool checks every connection it holds on each request (a
# poll syscall each), so CPU per poll grows with the pool. Measured with benchmarks/crowd_fleet.py
# (--interval 2, burst of 1,000): 1,000 jobs on one appliance cost 2.9 ms a poll at 32 hooks a
# client, 1.7 ms at 8 and 1.6 ms at 4 (HttpTrigger: 1.5-1.7 ms); over 100 appliances (10 hooks each)
# CPU was the same at every size, and memory per trigger 34.7, 36.8 and 41.4 KiB. One client for
# all had cost 3.8 ms a poll (benchmarks/trigger_scale.py).
HOOKS_PER_CLIENT = 8


class _SharedClients:
    """``httpx.AsyncClient``s shared by up to HOOKS_PER_CLIENT hooks of one event loop that talk to
    the same appliance with the same TLS settings; each is closed when its last hook lets go.

    A triggerer watching a thousand jobs then holds 125 clients and pools instead of a client per
    job. A client holds no session: the token travels in a header on each request, and the shared
    clients take no cookies (logins ask for header authentication).
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[object, ...], dict[httpx.AsyncClient, int]]
        ] = weakref.WeakKeyDictionary()

    def open_clients(self) -> int:
        """How many shared clients the running loop holds (for tests)."""
        return sum(len(pool) for pool in self._by_loop.get(asyncio.get_running_loop(), {}).values())

    def acquire(self, settings: ConnectionSettings, keepalive_expiry: float) -> httpx.AsyncClient:
        key = (settings.base_url, _trust(settings), settings.timeout, keepalive_expiry)
        clients = self._by_loop.setdefault(asyncio.get_running_loop(), {}).setdefault(key, {})
        for client, users in clients.items():
            if users < HOOKS_PER_CLIENT:
                clients[client] = users + 1
                return client
        client = httpx.AsyncClient(
            base_url=settings.base_url,
            verify=tls_context(settings),
            timeout=settings.timeout,
            headers={"Accept": "application/json"},
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=HOOKS_PER_CLIENT,
                max_keepalive_connections=HOOKS_PER_CLIENT,
                keepalive_expiry=keepalive_expiry,
            ),
        )
        client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        clients[client] = 1
        return client

    async def release(self, client: httpx.AsyncClient) -> None:
        by_key = self._by_loop.get(asyncio.get_running_loop(), {})
        for key, clients in by_key.items():
            if client in clients:
                clients[client] -= 1
                if clients[client] > 0:
                    return
                del clients[client]
                if not clients:
                    del by_key[key]
                break
        await client.aclose()


_clients = _SharedClients()


class _ConnectionLookups:
    """Lookups of one connection that are in flight at once in one event loop share one lookup.

    A triggerer taking on a thousand triggers at once then reads the connection once: on Airflow 3.0
    the lookups run one at a time in asgiref's thread, which spread a burst over seconds and made a
    shared session log in again for the triggers arriving last. Only a lookup in flight is shared: one
    made after it ended reads the connection anew (a rotated password is seen).
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Task[Any]]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, conn_id: str) -> Any:
        loop = asyncio.get_running_loop()
        pending = self._by_loop.setdefault(loop, {})
        task = pending.get(conn_id)
        if task is None:
            task = pending[conn_id] = loop.create_task(aget_connection(conn_id))
            task.add_done_callback(functools.partial(_lookup_done, pending, conn_id))
        return await asyncio.shield(task)  # a caller cancelled never cancels the others' lookup


def _lookup_done(pending: dict[str, asyncio.Task[Any]], conn_id: str, task: asyncio.Task[Any]) -> None:
    if pending.get(conn_id) is task:
        del pending[conn_id]
    if not task.cancelled():
        task.exception()  # retrieved here too: every waiter may have been cancelled


_lookups = _ConnectionLookups()


@functools.lru_cache(maxsize=4096)
def _url(base_url: str, target: str) -> httpx.URL:
    """A request's absolute URL, parsed once per target. Given a string, httpx parses it and merges
    it with the client's base URL on every request: a tenth of a poll's CPU in a crowd of triggers."""
    return httpx.URL(base_url + target)


def _trust(settings: ConnectionSettings) -> object:
    """The TLS settings that make clients and sessions interchangeable (a renewed bundle is new)."""
    return trust_version(settings) if settings.verify is not False else False


class AsyncBackupJobHook(CoreOwner):
    """Async access to one appliance: one session for the hook's life, closed by :meth:`aclose`.

    With ``shared_session_linger`` set (the triggers do), that session is the event loop's shared one
    of its appliance and credentials (:mod:`.shared_session`), which logs out when its last hook has
    let go and this many seconds have passed; None: a session of its own.

    The connection is resolved with Airflow's async-safe lookup; the HTTP client is made on first use.
    What it shares with the sync hook lives in :mod:`._transport`; here is only what ``httpx`` and
    awaiting need.
    """

    def __init__(
        self,
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        *,
        retry_policy: RetryPolicy | None = None,
        keepalive_expiry: float = 5.0,
        shared_session_linger: float | None = None,
    ):
        self.vcenter_conn_id = vcenter_conn_id
        self.shared_session_linger = shared_session_linger
        self._shared: SharedSession | None = None
        # A poller should keep its connection past one poll interval: with httpx's default of 5 s,
        # every poll at the usual 30-60 s intervals paid a new TCP (and TLS) handshake.
        self.keepalive_expiry = keepalive_expiry
        self.log = logging.getLogger(__name__)
        self._core = TransportCore(vcenter_conn_id, retry_policy, self.log, HTTPX_FAILURES)
        self._client: httpx.AsyncClient | None = None

    @property
    def settings(self) -> ConnectionSettings | None:
        """The connection's settings once read (on first use), else None."""
        return self._core.settings

    async def _settings(self) -> ConnectionSettings:
        if self._core.settings is None:
            return self._core.configure(await _lookups.get(self.vcenter_conn_id))
        return self._core.settings

    async def _session(self) -> VCenterSession:
        """The session this hook's exchanges run in: the one place that makes (or finds) it."""
        await self._settings()
        return self._core.vcenter()

    async def _shared_session(self) -> SharedSession | None:
        """The loop's shared session this hook's exchanges borrow, when it shares (taken once)."""
        if self.shared_session_linger is None:
            return None
        if self._shared is None:
            settings = await self._settings()
            linger = self.shared_session_linger
            self._shared = shared_sessions.acquire(settings, _trust(settings), self._holder, linger)
        return self._shared

    def _holder(self) -> AsyncBackupJobHook:
        """A hook of a session of its own, on these settings: a new shared session's logins and logout."""
        holder = AsyncBackupJobHook(
            self.vcenter_conn_id, retry_policy=self.retry_policy, keepalive_expiry=self.keepalive_expiry
        )
        holder._core.settings = self._core.settings  # resolved already: no second connection lookup
        return holder

    async def sharing_key(self) -> SessionKey:
        """Which shared session this hook's connection maps to (resolves the connection)."""
        settings = await self._settings()
        return SessionKey.of(settings, _trust(settings))

    async def _end_session(self, timeout: float) -> None:
        """Log out the session :meth:`_session` made, within ``timeout``, or let go of the shared
        one (which logs out after its linger when this was its last hook): their one counterpart."""
        if self._shared is not None:
            shared, self._shared = self._shared, None
            await shared.release()
        session = self._core.session
        if session is not None and session.is_open:
            await self._log_out(session, timeout)

    async def _log_out(self, session: VCenterSession, timeout: float) -> None:
        """Log ``session`` out within ``timeout``. A cancellation that cuts the logout short (an event
        loop ending, which cancels every task once, while the logout is in flight) gets one more
        attempt on the same token before it goes on: the session would otherwise stay open, one of
        the user's ~550, until vCenter's idle timeout."""
        token, dialect = session.token, session.dialect
        try:
            await asyncio.wait_for(self._drive(session, lambda s: s.logout(), LOGOUT_POLICY), timeout)
        except asyncio.CancelledError:
            if token is not None and dialect is not None:
                again = VCenterSession.resumed(token, dialect)
                with contextlib.suppress(VCenterError, asyncio.TimeoutError, OSError):
                    await asyncio.wait_for(self._drive(again, lambda s: s.logout(), LOGOUT_POLICY), timeout)
            raise

    # Transport: httpx, and asyncio.sleep --------------------------------------------------------------
    async def _send_once(self, req: HttpRequest) -> HttpResponse:
        settings = await self._settings()
        if self._client is None:
            self._client = _clients.acquire(settings, self.keepalive_expiry)
        try:
            r = await self._client.request(
                req.method, _url(settings.base_url, req.target), headers=req.headers, json=req.json_body
            )
        except httpx.HTTPError as err:
            probe = self._core.probe_for(err)
            raise self._core.failure(req, err, await _probe_tls(probe) if probe else None) from None
        return self._core.answer(req, r.status_code, r.content, r.headers.get("Content-Type", ""))

    async def _attempt(self, req: HttpRequest) -> HttpResponse | VCenterError:
        try:
            return await self._send_once(req)
        except VCenterError as err:
            return err

    async def run(
        self, operation: Callable[[VCenterSession], Exchange[T]], policy: RetryPolicy | None = None
    ) -> T:
        """Drive the exchange ``operation(session)`` returns; every error comes out naming the host.

        Sharing, the session is one borrowed from the shared session, and a 401 goes to it: one
        login again for all its hooks, then the exchange runs again on the new token."""
        shared = await self._shared_session()
        if shared is not None:
            return await shared.run(lambda session: self._drive(session, operation, policy))
        return await self._drive(await self._session(), operation, policy)

    async def _drive(
        self,
        session: VCenterSession,
        operation: Callable[[VCenterSession], Exchange[T]],
        policy: RetryPolicy | None,
    ) -> T:
        """The core's steps of one exchange in ``session``, with httpx and asyncio.sleep."""
        async with self._core.start(session, operation, policy) as run:
            for step in run:
                if isinstance(step, Send):
                    run.outcome = await self._attempt(step.request)
                else:
                    await asyncio.sleep(step.seconds)
        return run.result

    # The API ------------------------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> BackupJobStatus:
        return await self.run(lambda s: s.get_job(job_id))

    async def list_jobs(self) -> list[str]:
        return await self.run(lambda s: s.list_jobs())

    async def list_parts(self) -> list[str]:
        return await self.run(lambda s: s.list_parts())

    async def start_backup(self, request: BackupRequest | None = None, **fields: Any) -> BackupJobStatus:
        """Start a backup, of a :class:`BackupRequest` or of its fields as keyword arguments."""
        backup = BackupRequest.of(request, **fields)
        return await self.run(lambda s: s.start_backup(backup))

    async def cancel_job(self, job_id: str) -> CancelResult:
        return await self.run(lambda s: s.cancel_job(job_id))

    async def list_job_details(self, job_ids: Sequence[str] | None = None) -> dict[str, BackupJobDetails]:
        return await self.run(lambda session: session.list_job_details(job_ids))

    async def find_job(
        self,
        *,
        started_after: datetime,
        started_before: datetime | None = None,
        job_type: JobType | str | None = None,
    ) -> BackupJobStatus | None:
        return await self.run(
            lambda s: s.find_job(
                started_after=started_after, started_before=started_before, job_type=job_type
            )
        )

    async def aclose(self, timeout: float = 10.0) -> None:
        """Log out (bounded, also when the waiting task was cancelled) and close. Never raises."""
        try:
            await self._end_session(timeout)
        except (VCenterError, asyncio.TimeoutError, OSError) as err:
            self.log.warning("Could not log out of vCenter: %s", err)
        finally:
            if self._client is not None:
                client, self._client = self._client, None
                await _clients.release(client)

    async def __aenter__(self) -> AsyncBackupJobHook:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def _probe_tls(probe: Probe) -> list[str] | None:
    """The certificate's names if the port completes a TLS handshake, else None (cf. probe_tls)."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(probe.host, probe.port, ssl=probe.context, server_hostname=probe.host),
            probe.timeout,
        )
    except (OSError, ValueError, asyncio.TimeoutError):
        return None
    names = peer_names(writer.get_extra_info("peercert"))
    writer.close()
    return names
