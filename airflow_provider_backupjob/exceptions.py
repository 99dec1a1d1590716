"""Exceptions raised by the provider: one class for each failure a caller handles differently.

Every message names the vCenter host (and the job id where there is one) and quotes vCenter's own
messages; none ever contains a password or a session token. The classes know nothing of Airflow:
the sensor and the operator map them to task outcomes in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


class VCenterError(Exception):
    """Base class of every error this provider raises about talking to vCenter."""

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        job_id: str | None = None,
        status_code: int | None = None,
        vcenter_messages: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.job_id = job_id
        self.status_code = status_code
        self.vcenter_messages = tuple(vcenter_messages)
        self.detail = message
        super().__init__(self._compose())

    def _compose(self) -> str:
        where = []
        if self.host:
            where.append(f"host {self.host}")
        if self.job_id:
            where.append(f"job {self.job_id}")
        text = self.detail
        if where:
            text = f"{text} ({', '.join(where)})"
        if self.status_code is not None:
            text = f"{text} [HTTP {self.status_code}]"
        if self.vcenter_messages:
            text = f"{text}: vCenter says: " + "; ".join(self.vcenter_messages)
        return text

    def with_context(self, *, host: str | None = None, job_id: str | None = None) -> VCenterError:
        """Return the same error with the host and job id filled in where they were missing."""
        self.host = self.host or host
        self.job_id = self.job_id or job_id
        self.args = (self._compose(),)
        return self

    def to_event(self) -> dict[str, Any]:
        """A JSON-safe form for trigger events; :func:`error_from_event` turns it back."""
        return {
            "kind": type(self).__name__,
            "detail": self.detail,
            "host": self.host,
            "job_id": self.job_id,
            "status_code": self.status_code,
            "vcenter_messages": list(self.vcenter_messages),
        }


class VCenterApiError(VCenterError):
    """vCenter answered with an error that has no more specific class here."""


class UnexpectedResponseError(VCenterApiError):
    """vCenter's answer could not be understood: not JSON, a missing field, an unknown state."""


class VCenterUnavailableError(VCenterApiError):
    """A transient failure outlasted the retries: 502/503/504, refused or reset connections, timeouts.

    ``request_sent`` is False only when the request surely never reached the appliance (the
    connection could not be made), the one case where a non-idempotent request may be sent again.
    """

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: Any) -> None:
        self.request_sent = request_sent
        super().__init__(message, **kwargs)


class VCenterTLSError(VCenterApiError):
    """The appliance's certificate could not be verified."""

    HINT = (
        "set the connection extra 'ca_bundle' to the PEM file of the appliance's CA, or 'ca_cert' to its "
        "PEM text (the VMCA root certificates are at https://<vcenter>/certs/download.zip), or set "
        "'verify_ssl' to false to turn verification off (not recommended)"
    )

    @classmethod
    def for_other_names(cls, hostname: str, names: Sequence[str] | None) -> VCenterTLSError:
        """The certificate was issued by a trusted CA, but not for the name the connection uses."""
        on_it = f" ({', '.join(names[:8])})" if names else ""
        use = f"'{names[0]}'" if names else "a name the certificate lists"
        return cls(
            f"the TLS certificate of vCenter is valid (its CA is trusted: ca_bundle / ca_cert are right), "
            f"but for other names{on_it} than {hostname!r}: set the connection's host to {use}, the name "
            "the appliance's certificate was issued for"
        )

    @classmethod
    def from_ssl_error(cls, host: str, err: object, *, certificate: bool) -> VCenterTLSError:
        """``certificate``: the handshake failed on verification (else on anything else TLS)."""
        if certificate:
            return cls(f"the TLS certificate of vCenter could not be verified ({err}); {cls.HINT}", host=host)
        return cls(
            f"the TLS handshake with vCenter failed ({err}); check that the host and port serve HTTPS "
            "(an http:// host talks plain HTTP)",
            host=host,
        )


class VCenterAuthError(VCenterError):
    """Bad credentials, a missing privilege, or a login refused at the session cap."""


class VCenterConfigError(VCenterError, ValueError):
    """An invalid argument or connection setting (a job id with path characters, no host...):
    nothing was sent, and retrying cannot help."""


class BackupJobNotFound(VCenterError):
    """The appliance has no backup job with that id (404)."""


class BackupAlreadyRunning(VCenterApiError):
    """A backup or restore is already running on the appliance (``feature_in_use``)."""


_EVENT_KINDS: dict[str, type[VCenterError]] = {
    cls.__name__: cls
    for cls in (
        VCenterError,
        VCenterApiError,
        UnexpectedResponseError,
        VCenterUnavailableError,
        VCenterTLSError,
        VCenterAuthError,
        VCenterConfigError,
        BackupJobNotFound,
        BackupAlreadyRunning,
    )
}


def error_from_event(data: Any) -> VCenterError:
    """Rebuild an error carried in a trigger event. Total: any JSON value gives one of our errors;
    anything unreadable becomes an unexpected response, a field of the wrong type is left out."""
    kind = data.get("kind") if isinstance(data, dict) else None
    cls = _EVENT_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return UnexpectedResponseError(f"unexpected error payload in trigger event: {data!r:.200}")
    messages = data.get("vcenter_messages")
    status_code = data.get("status_code")
    return cls(
        _text_or_none(data.get("detail")) or "error",
        host=_text_or_none(data.get("host")),
        job_id=_text_or_none(data.get("job_id")),
        status_code=None
        if isinstance(status_code, bool) or not isinstance(status_code, int)
        else status_code,
        vcenter_messages=[str(m) for m in messages] if isinstance(messages, list) else [],
    )


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def exception_chain(err: BaseException, limit: int = 10) -> Iterator[BaseException]:
    """``err`` and what it wraps, outermost first: urllib3's ``reason``, a wrapped first argument
    (requests), then ``__cause__``/``__context__`` (httpx). Bounded: HTTP stacks wrap deeply."""
    seen: BaseException | None = err
    for _ in range(limit):
        if seen is None:
            return
        yield seen
        inner = getattr(seen, "reason", None)
        if not isinstance(inner, BaseException) and seen.args and isinstance(seen.args[0], BaseException):
            inner = seen.args[0]
        if not isinstance(inner, BaseException):
            inner = seen.__cause__ or seen.__context__
        seen = inner if isinstance(inner, BaseException) else None
