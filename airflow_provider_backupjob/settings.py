"""The ``vcenter_backup`` connection, read once into plain settings both transports share.

Knows the connection's field names (and nothing of Airflow's classes): ``get_provider_info`` declares
the same names for the UI. Extras are read under their plain names and under the
``extra__vcenter_backup__`` prefix older UIs write.
"""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from airflow_provider_backupjob.exceptions import VCenterConfigError
from airflow_provider_backupjob.protocol import API_STYLES

CONN_TYPE = "vcenter_backup"
DEFAULT_CONN_ID = "vcenter_backup_default"
DEFAULT_PORT = 443
DEFAULT_TIMEOUT = 30.0
EXTRA_FIELDS = ("verify_ssl", "ca_bundle", "api_style", "timeout")
# Read too, not yet in the form: the appliance's CA certificate(s) as PEM text (managed Airflow,
# where no file can be put on every worker and triggerer).
CA_CERT_FIELD = "ca_cert"
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


class ConnectionLike(Protocol):
    host: str | None
    port: int | None
    login: str | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    for key in (name, f"extra__{CONN_TYPE}__{name}"):
        value = extras.get(key)
        if value not in (None, ""):
            return value
    return None


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise VCenterConfigError(f"connection extra {name!r} must be true or false, not {value!r}")


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything a transport needs to reach one appliance. The password is kept out of ``repr``."""

    base_url: str  # scheme://host:port, no trailing slash
    host: str  # host:port, for messages
    username: str
    password: str = field(repr=False)
    verify: bool | str = True  # True, False, or the path of a CA bundle
    api_style: str = "auto"
    timeout: float = DEFAULT_TIMEOUT
    ca_cert: str | None = field(default=None, repr=False)  # PEM text of CA certificates, never logged

    @property
    def hostname(self) -> str:
        """The host name or address alone (no brackets, no port), as sockets and certificates see it."""
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.base_url).port or DEFAULT_PORT

    def verify_off_warning(self, conn_id: str) -> str | None:
        """What to warn, once per hook, when certificate verification is turned off."""
        if self.verify is not False:
            return None
        return (
            f"TLS certificate verification is OFF for vCenter {self.host} (connection {conn_id}): "
            "anyone on the path can read the credentials; set ca_bundle or ca_cert instead"
        )

    @property
    def ui_url(self) -> str:
        """The appliance management interface (VAMI)."""
        return f"https://{urlsplit(self.base_url).hostname}:5480/"

    @classmethod
    def from_connection(cls, conn: ConnectionLike, conn_id: str = "") -> ConnectionSettings:
        named = f"connection {conn_id!r}" if conn_id else "the connection"
        raw_host = (conn.host or "").strip()
        if not raw_host:
            raise VCenterConfigError(
                f"{named} has no host: set it to the vCenter address, e.g. vcsa.example.com"
            )
        if "://" not in raw_host:
            raw_host = f"https://{raw_host}"
        parts = urlsplit(raw_host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise VCenterConfigError(f"{named}: host must be a name or an http(s):// URL, not {conn.host!r}")
        port = conn.port or parts.port or DEFAULT_PORT
        hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if not conn.login or not conn.password:
            raise VCenterConfigError(f"{named} needs a login (the SSO user) and a password")

        extras = conn.extra_dejson or {}
        verify_raw = _extra(extras, "verify_ssl")
        verify: bool | str = True if verify_raw is None else _as_bool(verify_raw, "verify_ssl")
        ca_bundle = _extra(extras, "ca_bundle")
        if ca_bundle and verify:
            verify = _pem_file(str(ca_bundle), named)
        ca_cert = _extra(extras, CA_CERT_FIELD) if verify else None
        if ca_cert is not None:
            ca_cert = _pem_text(ca_cert, named)
        api_style = str(_extra(extras, "api_style") or "auto").lower()
        if api_style not in API_STYLES:
            raise VCenterConfigError(
                f"{named}: api_style must be one of {', '.join(API_STYLES)}, not {api_style!r}"
            )
        timeout_raw = _extra(extras, "timeout")
        try:
            timeout = float(timeout_raw) if timeout_raw is not None else DEFAULT_TIMEOUT
        except (TypeError, ValueError):
            raise VCenterConfigError(
                f"{named}: timeout must be a number of seconds, not {timeout_raw!r}"
            ) from None
        if timeout <= 0:
            raise VCenterConfigError(f"{named}: timeout must be positive, not {timeout}")
        return cls(
            base_url=f"{parts.scheme}://{hostname}:{port}",
            host=f"{hostname}:{port}",
            username=conn.login,
            password=conn.password,
            verify=verify,
            api_style=api_style,
            timeout=timeout,
            ca_cert=ca_cert,
        )


def _pem_file(path: str, named: str) -> str:
    """``path`` if it is a readable PEM file of certificates, else the error that says what to fix."""
    if not os.path.isfile(path):
        raise VCenterConfigError(f"{named}: ca_bundle {path!r} is not a readable file")
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
        ssl.create_default_context(cafile=path)
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        raise VCenterConfigError(
            f"{named}: ca_bundle {path!r} is not a PEM file of CA certificates ({type(err).__name__}); "
            "it must hold '-----BEGIN CERTIFICATE-----' blocks (convert a DER .crt/.cer file with "
            "`openssl x509 -inform der -in FILE -out FILE.pem`)"
        ) from None
    if PEM_CERTIFICATE.encode() not in head:
        raise VCenterConfigError(
            f"{named}: ca_bundle {path!r} holds no '-----BEGIN CERTIFICATE-----' block: it must be a PEM "
            "file of the appliance's CA certificates"
        )
    return path


def _pem_text(value: Any, named: str) -> str:
    """The connection extra ``ca_cert`` if it is PEM text of certificates. Its text is never quoted."""
    text = value.strip() if isinstance(value, str) else ""
    problem = "" if PEM_CERTIFICATE in text else "no '-----BEGIN CERTIFICATE-----' block"
    if not problem:
        try:
            ssl.create_default_context(cadata=text)
        except (ssl.SSLError, ValueError) as err:
            problem = f"not readable as certificates ({type(err).__name__})"
    if problem:
        raise VCenterConfigError(
            f"{named}: the extra 'ca_cert' must be the PEM text of the appliance's CA certificate(s) "
            f"('-----BEGIN CERTIFICATE-----' ... '-----END CERTIFICATE-----'): {problem}"
        )
    return text + "\n"


CaVersion = tuple[str | None, int, int, str | None]


def trust_version(settings: ConnectionSettings) -> CaVersion:
    """What the trust of ``settings`` is made of: the CA bundle's path with its file's version (a
    replaced bundle, a renewed VMCA root, is a new setting) and a digest of the ``ca_cert`` text."""
    digest = hashlib.sha256(settings.ca_cert.encode()).hexdigest() if settings.ca_cert else None
    if isinstance(settings.verify, str):
        stat = os.stat(settings.verify)
        return (settings.verify, stat.st_mtime_ns, stat.st_size, digest)
    return (None, 0, 0, digest)


def tls_context(
    settings: ConnectionSettings, *, check_hostname: bool = True, verify: bool = True
) -> ssl.SSLContext:
    """The one SSL context of a connection, for both clients: the system's CAs, or the ``ca_bundle``
    file and/or the ``ca_cert`` text when set. ``verify=False``: one that verifies nothing (for
    ``verify_ssl`` false, and for asking a port whether it speaks TLS at all)."""
    if verify is False or settings.verify is False:
        return _unverified_context()
    return _verifying_context(trust_version(settings), settings.ca_cert, check_hostname)


@functools.lru_cache(maxsize=32)
def _verifying_context(version: CaVersion, ca_cert: str | None, check_hostname: bool) -> ssl.SSLContext:
    """One context per trust setting per process: building one costs milliseconds."""
    if version[0] is None and ca_cert is None:
        ctx = ssl.create_default_context()
    else:
        ctx = ssl.create_default_context(cafile=version[0], cadata=ca_cert)
    ctx.check_hostname = check_hostname
    return ctx


@functools.lru_cache(maxsize=1)
def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
