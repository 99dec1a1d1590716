"""AsyncBackupJobHook: the asynchronous shell around the sans-IO protocol, over ``httpx``.

Used by the trigger in the triggerer's event loop: every call awaits, nothing blocks, no thread.
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import logging
import os
import ssl
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

import httpx
from airflow.sdk import BaseHook
from tenacity import AsyncRetrying

from airflow_provider_backupjob.exceptions import (
    VCenterApiError,
    VCenterError,
    VCenterTLSError,
    VCenterUnavailableError,
    caused_by,
)
from airflow_provider_backupjob.hooks.shared_session import (
    SessionKey,
    SharedSession,
    Transport,
    shared_sessions,
)
from airflow_provider_backupjob.models import BackupJobStatus
from airflow_provider_backupjob.protocol import (
    Exchange,
    HttpRequest,
    HttpResponse,
    VCenterSession,
    drive_async,
    error_for,
    is_transient,
)
from airflow_provider_backupjob.retry import RetryPolicy
from airflow_provider_backupjob.settings import DEFAULT_CONN_ID, ConnectionSettings

T = TypeVar("T")


CaVersion = tuple[bool | str, int, int]


def _ca_version(setting: bool | str) -> CaVersion:
    """The verify setting with its CA bundle file's version: a replaced bundle (a renewed VMCA
    root) is a new setting, for the SSL contexts and the shared clients alike."""
    if isinstance(setting, str):
        stat = os.stat(setting)
        return (setting, stat.st_mtime_ns, stat.st_size)
    return (setting, 0, 0)


@functools.lru_cache(maxsize=16)
def _ssl_context(version: CaVersion) -> ssl.SSLContext:
    """One verifying context per CA bundle version per process: building one costs milliseconds."""
    cafile = version[0] if isinstance(version[0], str) else None
    return ssl.create_default_context(cafile=cafile)


# Hooks that share one client. One client for all was measured worse: httpcore's pool does work
# proportional to its connections on every request, so a burst of 1,000 polls through one pool cost
# 3.8 ms of CPU a poll against 1.3 ms with a client per hook (benchmarks/trigger_scale.py).
HOOKS_PER_CLIENT = 32


class _SharedClients:
    """``httpx.AsyncClient``s shared by up to HOOKS_PER_CLIENT hooks of one event loop that talk to
    the same appliance with the same TLS settings; each is closed when its last hook lets go.

    A triggerer watching a thousand jobs then holds a few dozen clients and pools instead of a
    client and a socket per job. Sessions stay per hook: the token travels in a header on each
    request, and the shared clients take no cookies (logins ask for header authentication).
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[object, ...], dict[httpx.AsyncClient, int]]
        ] = weakref.WeakKeyDictionary()

    def open_clients(self) -> int:
        """How many shared clients the running loop holds (for tests)."""
        return sum(len(pool) for pool in self._by_loop.get(asyncio.get_running_loop(), {}).values())

    def acquire(self, settings: ConnectionSettings, keepalive_expiry: float) -> httpx.AsyncClient:
        ca = _ca_version(settings.verify)
        key = (settings.base_url, ca, settings.timeout, keepalive_expiry)
        clients = self._by_loop.setdefault(asyncio.get_running_loop(), {}).setdefault(key, {})
        for client, users in clients.items():
            if users < HOOKS_PER_CLIENT:
                clients[client] = users + 1
                return client
        client = httpx.AsyncClient(
            base_url=settings.base_url,
            verify=False if settings.verify is False else _ssl_context(ca),
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


class AsyncBackupJobHook:
    """Async access to one appliance: one session for the hook's life, closed by :meth:`aclose`.

    The connection is resolved with Airflow's async-safe lookup; the HTTP client is made on first use.
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
        self.retry_policy = retry_policy or RetryPolicy()
        # A poller should keep its connection past one poll interval: with httpx's default of 5 s,
        # every poll at the usual 30-60 s intervals paid a new TCP (and TLS) handshake.
        self.keepalive_expiry = keepalive_expiry
        self.settings: ConnectionSettings | None = None
        self._client: httpx.AsyncClient | None = None
        self._vcenter: VCenterSession | None = None
        # Set: the hook uses the event loop's shared session of its appliance (hooks/shared_session.py),
        # which lingers this long after its last user; None: a session of its own.
        self.shared_session_linger = shared_session_linger
        self._shared: SharedSession | None = None
        self.log = logging.getLogger(__name__)

    async def _settings(self) -> ConnectionSettings:
        if self.settings is None:
            conn = await BaseHook.aget_connection(self.vcenter_conn_id)
            self.settings = ConnectionSettings.from_connection(conn, self.vcenter_conn_id)
            if warning := self.settings.verify_off_warning(self.vcenter_conn_id):
                self.log.warning(warning)
        return self.settings

    async def sharing_key(self) -> SessionKey:
        """Which shared session this hook's connection maps to (resolves the connection)."""
        settings = await self._settings()
        return SessionKey.of(settings, _ca_version(settings.verify))

    def _transport(self) -> Transport:
        """A shared session's own way to the appliance, for its logins and logout."""
        assert self.settings is not None
        settings, client = self.settings, _clients.acquire(self.settings, self.keepalive_expiry)
        return Transport(
            self._sender(client, settings.host, self.retry_policy), lambda: _clients.release(client)
        )

    async def _setup(self) -> tuple[ConnectionSettings, httpx.AsyncClient]:
        settings = await self._settings()
        if self._client is None:
            self._client = _clients.acquire(settings, self.keepalive_expiry)
        if self.shared_session_linger is not None:
            if self._shared is None:
                tls = _ca_version(settings.verify)
                self._shared = shared_sessions.acquire(
                    settings, tls, self._transport, self.shared_session_linger
                )
        elif self._vcenter is None:
            s = settings
            self._vcenter = VCenterSession(username=s.username, password=s.password, api_style=s.api_style)
        return settings, self._client

    async def _send_once(self, client: httpx.AsyncClient, host: str, req: HttpRequest) -> HttpResponse:
        try:
            r = await client.request(req.method, req.target, headers=req.headers, json=req.json_body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
            if caused_by(err, ssl.SSLError):
                certificate = caused_by(err, ssl.SSLCertVerificationError)
                raise VCenterTLSError.from_ssl_error(host, err, certificate=certificate) from None
            raise VCenterUnavailableError(
                f"could not reach vCenter to {req.operation}: {type(err).__name__}: {err}", request_sent=False
            ) from None
        except httpx.TimeoutException as err:
            raise VCenterUnavailableError(
                f"vCenter did not answer in time to the request to {req.operation} ({type(err).__name__})"
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as err:
            raise VCenterUnavailableError(
                f"the connection to vCenter failed during the request to {req.operation}: "
                f"{type(err).__name__}: {err}"
            ) from None
        except httpx.HTTPError as err:
            raise VCenterApiError(
                f"the request to {req.operation} failed: {type(err).__name__}: {err}"
            ) from None
        resp = HttpResponse(r.status_code, r.content, r.headers.get("Content-Type", ""))
        if is_transient(resp):
            raise error_for(req, resp)
        return resp

    async def run(
        self, exchange_of: Callable[[VCenterSession], Exchange[T]], policy: RetryPolicy | None = None
    ) -> T:
        """Drive the exchange ``exchange_of(session)`` returns; errors name the host."""
        settings, client = await self._setup()
        send = self._sender(client, settings.host, policy or self.retry_policy)
        try:
            if self._shared is not None:
                return await self._shared.run(exchange_of, lambda exchange: drive_async(exchange, send))
            assert self._vcenter is not None
            return await drive_async(exchange_of(self._vcenter), send)
        except VCenterError as err:
            raise err.with_context(host=settings.host) from err.__cause__

    def _sender(
        self, client: httpx.AsyncClient, host: str, chosen: RetryPolicy
    ) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
        async def send(req: HttpRequest) -> HttpResponse:
            try:
                return await self._send_once(client, host, req)
            except VCenterUnavailableError as err:
                retrying = chosen.retries_after(req, err)
                if retrying is None:
                    raise
                await asyncio.sleep(chosen.first_wait())
            async for attempt in AsyncRetrying(**retrying):
                with attempt:
                    return await self._send_once(client, host, req)
            raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

        return send

    async def get_job(self, job_id: str) -> BackupJobStatus:
        return await self.run(lambda session: session.get_job(job_id))

    async def list_jobs(self) -> list[str]:
        return await self.run(lambda session: session.list_jobs())

    async def aclose(self, timeout: float = 10.0) -> None:
        """Log out (one bounded attempt, also when the waiting task was cancelled) and close. Never raises."""
        try:
            if self._shared is not None:
                shared, self._shared = self._shared, None
                await shared.release()  # the shared session logs out when its last user is gone
            if self._vcenter is not None and self._vcenter.is_open:
                vcenter = self._vcenter
                await asyncio.wait_for(self.run(lambda _: vcenter.logout(), RetryPolicy(attempts=1)), timeout)
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
