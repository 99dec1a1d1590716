"""`SimulatorClient`: drive a simulator process through its /_sim/ control surface (stdlib only)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from .control import CALLS, ControlApi


class SimulatorError(RuntimeError):
    """The control surface answered an error."""


class SimulatorClient(ControlApi):
    """The control methods of `Simulator` (both are `ControlApi`), over HTTP to ``{base_url}/_sim/...``."""

    def __init__(
        self, base_url: str, *, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.ssl_context = ssl_context
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never via a proxy
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    def _call(self, name: str, args: dict[str, Any]) -> Any:
        call = CALLS[name]
        body = call.body(args)
        path = call.path
        if "{job_id}" in path:
            path = path.format(job_id=quote(str(body.pop("job_id")), safe=""))
        data = json.dumps(body).encode() if call.method in ("POST", "PUT", "PATCH") else None
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            f"{self.base_url}/_sim/{path}",
            data=data,
            method=call.method,
            headers={"content-type": "application/json", "accept": "application/json"},
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return call.result(json.loads(resp.read() or b"null"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            if exc.code == 404 and call.method == "GET" and "{job_id}" in call.path:
                return call.result(None)
            raise SimulatorError(f"{call.method} /_sim/{path}: HTTP {exc.code}: {detail}") from exc

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll /_sim/health until the simulator answers (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("health", {})
                return
            except (OSError, SimulatorError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
