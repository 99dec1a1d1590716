"""`Simulator`: the simulated appliance on a background thread with its own event loop, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from .control import ControlApi, run_locally
from .server import SimServer
from .state import SimState


class Simulator(ControlApi):
    """Run a simulated vCenter appliance in-process.

    ``with Simulator() as sim: requests.post(sim.base_url + "/api/session", auth=...)``.
    Every control method is thread-safe: it acts on the shared `SimState` under its lock.
    """

    def __init__(
        self,
        api_enabled: bool = True,
        session_cap: int = 550,
        idle_timeout: float = 1800.0,
        users: Mapping[str, str] | None = None,
        *,
        unprivileged_users: Iterable[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> None:
        self.state = SimState(
            users=users,
            unprivileged_users=unprivileged_users,
            session_cap=session_cap,
            idle_timeout=idle_timeout,
            api_enabled=api_enabled,
            seed=seed,
        )
        self._server = SimServer(self.state, host=host, port=port, ssl_context=ssl_context)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Simulator:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._thread = threading.Thread(target=self._run, name="vcenter-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator did not start in time")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError(f"simulator failed to start: {self._error!r}") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        await self._server.start()
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self._server.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the server and its connections; join the thread (bounded wait)."""
        loop, ev, thread = self._loop, self._stop_event, self._thread
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(ev.set)
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- addresses ------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        return self._server.base_url

    # ---- control: the methods of ControlApi, run on the state in-process ---------------------------
    def _call(self, name: str, args: dict[str, Any]) -> Any:
        return run_locally(self.state, name, args)
