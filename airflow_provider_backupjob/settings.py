"""The ``vcenter_backup`` connection, read once into plain settings both transports share.

Knows the connection's field names (and nothing of Airflow's classes): ``get_provider_info`` declares
the same names for the UI. Extras are read under their plain names and under the
``extra__vcenter_backup__`` prefix older UIs write.
"""

from __future__ import annotations

import os
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

    def verify_off_warning(self, conn_id: str) -> str | None:
        """What to warn, once per hook, when certificate verification is turned off."""
        if self.verify is not False:
            return None
        return (
            f"TLS certificate verification is OFF for vCenter {self.host} (connection {conn_id}): "
            "anyone on the path can read the credentials; set ca_bundle instead"
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
            if not os.path.isfile(str(ca_bundle)):
                raise VCenterConfigError(f"{named}: ca_bundle {ca_bundle!r} is not a readable file")
            verify = str(ca_bundle)
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
        )
