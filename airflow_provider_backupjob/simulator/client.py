"""`SimulatorClient`: drive a simulator process through its /_sim/ control surface (stdlib only)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote


class SimulatorError(RuntimeError):
    """The control surface answered an error."""


class SimulatorClient:
    """Same control methods as `Simulator`, over HTTP to ``{base_url}/_sim/...``."""

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

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            f"{self.base_url}/_sim/{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json", "accept": "application/json"},
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            if exc.code == 404 and method == "GET" and path.startswith("jobs/"):
                return None
            raise SimulatorError(f"{method} /_sim/{path}: HTTP {exc.code}: {detail}") from exc

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll /_sim/health until the simulator answers (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "health")
                return
            except (OSError, SimulatorError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

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
        body = {
            "job_id": job_id,
            "outcome": outcome,
            "none_polls": none_polls,
            "inprogress_polls": inprogress_polls,
            "end_time_null": end_time_null,
            "messages": messages,
            "job_type": job_type,
            "started_ago": started_ago,
            "run_seconds": run_seconds,
        }
        return str(self._call("POST", "jobs", body)["id"])

    def remove_job(self, job_id: str) -> bool:
        return bool(self._call("DELETE", f"jobs/{quote(job_id, safe='')}")["removed"])

    def list_jobs(self) -> list[str]:
        return [str(j) for j in self._call("GET", "jobs")["jobs"]]

    def job_state(self, job_id: str) -> str | None:
        info = self._call("GET", f"jobs/{quote(job_id, safe='')}")
        return None if info is None else str(info["state"])

    def job_info(self, job_id: str) -> dict[str, Any] | None:
        info = self._call("GET", f"jobs/{quote(job_id, safe='')}")
        if info is None:
            return None
        return {k: info[k] for k in ("status", "polls", "gets", "request")}

    def inject(
        self,
        kind: str,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> int:
        body = {
            "kind": kind,
            "method": method,
            "path_contains": path_contains,
            "times": times,
            "delay": delay,
        }
        return int(self._call("POST", "faults", body)["pending"])

    def set_chaos(
        self, rate: float, seed: int = 0, kinds: list[str] | None = None, delay: float = 0.1
    ) -> None:
        self._call("POST", "chaos", {"rate": rate, "seed": seed, "kinds": kinds, "delay": delay})

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def expire_all_sessions(self) -> int:
        return int(self._call("POST", "expire-sessions")["expired"])

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "stats")
        return result

    def reset_counters(self) -> None:
        self._call("POST", "reset-counters")

    def set_api_enabled(self, enabled: bool) -> None:
        self._call("POST", "config", {"api_enabled": enabled})

    def set_session_cap(self, cap: int) -> None:
        self._call("POST", "config", {"session_cap": cap})

    def set_idle_timeout(self, seconds: float) -> None:
        self._call("POST", "config", {"idle_timeout": seconds})

    def set_start_script(
        self,
        outcome: str = "SUCCEEDED",
        none_polls: int = 0,
        inprogress_polls: int = 3,
        end_time_null: bool = False,
    ) -> None:
        self._call(
            "POST",
            "start-script",
            {
                "outcome": outcome,
                "none_polls": none_polls,
                "inprogress_polls": inprogress_polls,
                "end_time_null": end_time_null,
            },
        )

    def set_details_enabled(self, enabled: bool) -> None:
        self._call("POST", "config", {"details_enabled": enabled})

    def set_schedule(
        self,
        interval: float | None,
        outcomes: list[str] | None = None,
        run_seconds: float | None = 2.0,
        first_in: float | None = None,
        count: int | None = None,
    ) -> None:
        body = {
            "interval": interval,
            "outcomes": outcomes,
            "run_seconds": run_seconds,
            "first_in": first_in,
            "count": count,
        }
        self._call("POST", "schedule", body)

    def schedule_info(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call("GET", "schedule")["schedule"]
        return result
