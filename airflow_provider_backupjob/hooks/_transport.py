"""What both hooks do, written once; the hooks keep only the client library and how they wait.

- set-up from the connection (:meth:`TransportCore.configure`) and the session object;
- the run of one exchange as *steps* (:meth:`TransportCore.start`): send a request, or sleep. Each
  request is sent once; tenacity takes over only after a first retryable failure, and each retry is
  logged with its attempt number and wait. A hook drives the steps with its own client and clock;
- a client library's exceptions (through a small table per library) and transient answers turned into
  this provider's errors, with one wording; misconfigurations that cannot pass (a name that does not
  resolve, ``http://`` to an HTTPS port, a certificate for other names) fail fast with the fix;
- the host named once in every error, the session token registered with the secrets masker, and the
  bounded logout policy.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from tenacity import RetryCallState, Retrying

from airflow_provider_backupjob.exceptions import (
    VCenterApiError,
    VCenterConfigError,
    VCenterError,
    VCenterTLSError,
    VCenterUnavailableError,
    exception_chain,
)
from airflow_provider_backupjob.protocol import (
    Exchange,
    HttpRequest,
    HttpResponse,
    VCenterSession,
    error_for,
    is_transient,
)
from airflow_provider_backupjob.retry import RetryPolicy
from airflow_provider_backupjob.settings import ConnectionLike, ConnectionSettings, tls_context

T = TypeVar("T")

LOGOUT_POLICY = RetryPolicy(attempts=2, max_seconds=10, initial_wait=0.2, max_wait=1)
"""One retry of a logout, soon: a session left open costs one of the user's ~550."""

PROBE_TIMEOUT = 5.0
# getaddrinfo's answers that a name surely does not exist; EAI_AGAIN (a resolver that may recover)
# stays an outage.
NAME_UNKNOWN = frozenset(code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code)
NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


class Failure(Enum):
    """What a client library's exception means for us."""

    CONNECT = "connect"  # no connection made: the request surely never left
    CONNECT_TIMEOUT = "connect_timeout"
    READ_TIMEOUT = "read_timeout"  # sent, no answer in time
    DROPPED = "dropped"  # the connection broke during the request
    OTHER = "other"


FailureTable = tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Failure], ...]
"""A client library's exception classes and what each means: the first row with a class anywhere in
the exception's chain wins."""


@dataclass(frozen=True)
class Send:
    request: HttpRequest


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Outcome = HttpResponse | VCenterError | None
"""What a hook sends back into the steps: the answer to a Send, its error, or None after a Sleep."""


@dataclass(frozen=True)
class Probe:
    """A TLS handshake to ask the port what it speaks, and which names its certificate is for."""

    host: str
    port: int
    context: ssl.SSLContext
    timeout: float


class Run(Generic[T]):
    """One exchange being driven by a hook, in a ``with`` (sync) or ``async with`` block: iterate for
    the steps, set :attr:`outcome` after each one; :attr:`result` holds what the exchange returned.
    Leaving the block closes the exchange and masks a new session token, whatever happened."""

    def __init__(self, steps: Generator[Step, Outcome, T], new_token: Callable[[], str | None]) -> None:
        self._steps = steps
        self._new_token = new_token
        self.outcome: Outcome = None
        self.result: T

    def __enter__(self) -> Run[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._steps.close()
        if token := self._new_token():
            mask_token(token)

    async def __aenter__(self) -> Run[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._steps.close()
        if token := self._new_token():
            await amask_token(token)

    def __iter__(self) -> Run[T]:
        return self

    def __next__(self) -> Step:
        try:
            step = self._steps.send(self.outcome)
        except StopIteration as done:
            self.result = done.value
            raise StopIteration from None
        self.outcome = None
        return step


class CoreOwner:
    """What the two hooks show of their :class:`TransportCore`."""

    _core: TransportCore

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._core.retry_policy


def mask_token(token: str) -> None:
    """Register a session token with Airflow's secrets masker (here and in the supervisor)."""
    from airflow.sdk.log import mask_secret

    mask_secret(token)


async def amask_token(token: str) -> None:
    """The same from an event loop: Airflow 3.3's ``amask_secret`` cannot block it on the supervisor."""
    from airflow.sdk import log as sdk_log

    amask = getattr(sdk_log, "amask_secret", None)
    if amask is None:  # before Airflow 3.3: mask_secret is safe in async code there
        sdk_log.mask_secret(token)
    else:
        await amask(token)


def peer_names(cert: dict[str, Any] | None) -> list[str]:
    """The DNS names and addresses of a certificate (``getpeercert()``), in its order."""
    return [value for _kind, value in (cert or {}).get("subjectAltName", ())]


def probe_tls(probe: Probe) -> list[str] | None:
    """Blocking: the certificate's names if the port completes a TLS handshake, else None."""
    try:
        with (
            socket.create_connection((probe.host, probe.port), timeout=probe.timeout) as raw,
            probe.context.wrap_socket(raw, server_hostname=probe.host) as tls,
        ):
            return peer_names(tls.getpeercert())
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return None


class TransportCore:
    """The state and the decisions both hooks share; no client library, no sleeping."""

    def __init__(
        self, conn_id: str, retry_policy: RetryPolicy | None, log: Any, failures: FailureTable
    ) -> None:
        self.conn_id = conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self.log = log
        self.failures = failures
        self.settings: ConnectionSettings | None = None
        self.session: VCenterSession | None = None
        # An HTTP answer came back with these settings: the port speaks what the URL says.
        self.answered = False
        self._masked_token: str | None = None

    # Set-up -------------------------------------------------------------------------------------------
    def configure(self, conn: ConnectionLike) -> ConnectionSettings:
        settings = ConnectionSettings.from_connection(conn, self.conn_id)
        if warning := settings.verify_off_warning(self.conn_id):
            self.log.warning(warning)
        self.settings = settings
        return settings

    def vcenter(self) -> VCenterSession:
        if self.session is None:
            s = self._settings()
            self.session = VCenterSession(username=s.username, password=s.password, api_style=s.api_style)
        return self.session

    def _settings(self) -> ConnectionSettings:
        assert self.settings is not None, "configure() comes first"
        return self.settings

    # One exchange, as steps -----------------------------------------------------------------------------
    def start(
        self,
        session: VCenterSession,
        operation: Callable[[VCenterSession], Exchange[T]],
        policy: RetryPolicy | None = None,
    ) -> Run[T]:
        return Run(self._steps(session, operation, policy), lambda: self._token_to_mask(session))

    def _steps(
        self,
        session: VCenterSession,
        operation: Callable[[VCenterSession], Exchange[T]],
        policy: RetryPolicy | None,
    ) -> Generator[Step, Outcome, T]:
        """Drive the exchange ``operation(session)``: yields what to do and is sent its outcome;
        every error comes out naming the host, and a new session token is masked."""
        chosen = policy or self.retry_policy
        exchange = operation(session)
        try:
            req = next(exchange)
            while True:
                req = exchange.send((yield from self._attempts(req, chosen)))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except VCenterError as err:
            raise err.with_context(host=self._settings().host) from err.__cause__
        finally:
            exchange.close()

    def _attempts(self, req: HttpRequest, policy: RetryPolicy) -> Generator[Step, Outcome, HttpResponse]:
        outcome = yield Send(req)
        if not isinstance(outcome, VCenterError):
            assert outcome is not None
            return outcome
        retrying = policy.retries_after(req, outcome)
        if retrying is None:
            raise outcome
        wait = policy.first_wait()
        self._log_retry(outcome, 1, wait)
        yield Sleep(wait)
        waits: list[float] = []
        for attempt in Retrying(**retrying, sleep=waits.append, before_sleep=self._log_tenacity):
            if waits:
                yield Sleep(waits.pop())
            outcome = yield Send(req)
            if not isinstance(outcome, VCenterError):
                assert outcome is not None
                return outcome
            attempt.retry_state.set_exception((type(outcome), outcome, outcome.__traceback__))
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _log_tenacity(self, state: RetryCallState) -> None:
        assert state.outcome is not None
        assert state.next_action is not None
        self._log_retry(state.outcome.exception(), state.attempt_number + 1, state.next_action.sleep)

    def _log_retry(self, err: BaseException | None, attempt: int, wait: float) -> None:
        host = self._settings().host
        self.log.warning("vCenter %s: %s (attempt %d); retrying in %.1f s", host, err, attempt, wait)

    def _token_to_mask(self, session: VCenterSession) -> str | None:
        """The session's token if it is new, to register with Airflow's secrets masker."""
        token = session.token
        if not token or token == self._masked_token:
            return None
        self._masked_token = token
        return token

    # Answers and failures ---------------------------------------------------------------------------
    def answer(self, req: HttpRequest, status: int, body: bytes, content_type: str) -> HttpResponse:
        """An HTTP answer as the protocol's response; a transient status raises to be retried."""
        self.answered = True
        resp = HttpResponse(status, body, content_type)
        if is_transient(resp):
            raise error_for(req, resp)
        return resp

    def probe_for(self, err: BaseException) -> Probe | None:
        """The handshake that tells a misconfiguration from an outage, when ``err`` may be one: a
        connection to an ``http://`` URL closed before any answer ever came (an HTTPS port?), or a
        certificate refused for its names (which names is it for?)."""
        s = self._settings()
        host, port = s.hostname, s.port
        if _hostname_mismatch(err):
            return Probe(host, port, tls_context(s, check_hostname=False), PROBE_TIMEOUT)
        kind = self._failure(err)
        if s.base_url.startswith("http://") and not self.answered and kind is Failure.DROPPED:
            return Probe(host, port, tls_context(s, verify=False), min(PROBE_TIMEOUT, s.timeout))
        return None

    def failure(self, req: HttpRequest, err: BaseException, names: list[str] | None = None) -> VCenterError:
        """Our error for a client library's exception; ``names``: what :meth:`probe_for` found."""
        s = self._settings()
        reason = root_reason(err)
        kind = self._failure(err)
        tls = next((e for e in exception_chain(err) if isinstance(e, ssl.SSLError)), None)
        # A handshake cut short (EOF) is what an appliance restarting does: an outage, not TLS.
        if kind is Failure.CONNECT and tls is not None and not isinstance(tls, ssl.SSLEOFError):
            if _hostname_mismatch(err):
                return VCenterTLSError.for_other_names(s.hostname, names)
            certificate = isinstance(tls, ssl.SSLCertVerificationError)
            return VCenterTLSError.from_ssl_error(s.host, reason, certificate=certificate)
        if names is not None and kind is Failure.DROPPED:
            return VCenterConfigError(
                f"{s.hostname} port {s.port} speaks HTTPS, and the connection's host says http://: "
                f"set the host to https://{s.hostname} ({reason})"
            )
        gai = next((e for e in exception_chain(err) if isinstance(e, socket.gaierror)), None)
        if gai is not None and gai.errno in NAME_UNKNOWN:
            return VCenterConfigError(
                f"the host name {s.hostname!r} does not resolve ({gai.strerror}): check the connection's "
                "host (a typo? a name only another network knows?)"
            )
        if kind is Failure.CONNECT:
            return VCenterUnavailableError(
                f"could not reach vCenter to {req.operation}: {reason}", request_sent=False
            )
        if kind is Failure.CONNECT_TIMEOUT:
            return VCenterUnavailableError(
                f"timed out connecting to vCenter to {req.operation}", request_sent=False
            )
        if kind is Failure.READ_TIMEOUT:
            return VCenterUnavailableError(
                f"vCenter did not answer within {s.timeout:g} s to the request to {req.operation}"
            )
        if kind is Failure.DROPPED:
            return VCenterUnavailableError(
                f"the connection to vCenter failed during the request to {req.operation}: {reason}"
            )
        return VCenterApiError(f"the request to {req.operation} failed: {reason}")

    def _failure(self, err: BaseException) -> Failure:
        chain = list(exception_chain(err))
        for kinds, meaning in self.failures:
            if any(isinstance(link, kinds) for link in chain):
                return meaning
        return Failure.OTHER


def _hostname_mismatch(err: BaseException) -> bool:
    return any(
        isinstance(e, ssl.SSLCertVerificationError) and e.verify_code in NAME_MISMATCH
        for e in exception_chain(err)
    )


def root_reason(err: BaseException) -> str:
    """A short reason (``ConnectionRefusedError``, a certificate error) without the request's URL."""
    *_, seen = exception_chain(err)
    text = str(seen)
    # urllib3 puts "HTTPSConnectionPool(host=..., port=...): " and the URL path in front; drop them.
    text = text.split("): ", 1)[-1] if "ConnectionPool(" in text else text
    return f"{type(seen).__name__}: {text}"[:300]
