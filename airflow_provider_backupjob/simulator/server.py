"""HTTP/1.1 transport: asyncio streams + h11, keep-alive, transport-level faults."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
import ssl
import struct
from typing import Any

import h11

from .app import App, Request, Response, json_response
from .state import SimState

MAX_BODY = 1 << 20
READ_CHUNK = 65536


class _Abort(Exception):
    """Close the connection without answering (`reset`: with an RST)."""

    def __init__(self, reset: bool) -> None:
        super().__init__("reset" if reset else "drop")
        self.reset = reset


class SimServer:
    """Serves one `SimState` on a host and port; `await start()`, then `await close()`."""

    def __init__(
        self,
        state: SimState,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_timeout: float = 300.0,
        backlog: int = 4096,
    ) -> None:
        self.state = state
        self.app = App(state)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.keepalive_timeout = keepalive_timeout
        self.backlog = backlog
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connect,
            self.host,
            self.port,
            ssl=self.ssl_context,
            backlog=self.backlog,
            reuse_address=True,
        )
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()  # wakes handlers blocked on a read
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=0.5)
        tasks = list(self._tasks)  # e.g. sleeping in a `slow` fault
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5.0)

    # ---- per connection -------------------------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except _Abort as ab:
            if ab.reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
        except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # server shutting down: end quietly
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        tls = self.ssl_context is not None
        while True:
            try:
                req = await self._read_request(conn, reader, writer, tls)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
                    await self._send(conn, writer, json_response(status, {"error": str(exc)}), close=True)
                return
            if req is None:
                return
            fault = self.app.begin(req)
            if fault is not None and fault.kind == "drop":
                raise _Abort(reset=False)
            if fault is not None and fault.kind == "slow" and fault.delay > 0:
                await asyncio.sleep(fault.delay)
            response = self.app.respond(req, fault)
            if fault is not None and fault.kind == "reset_after_read":
                raise _Abort(reset=True)
            await self._send(conn, writer, response)
            if conn.our_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool
    ) -> Request | None:
        req: Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
                # a keep-alive connection idles between requests; a request in flight gets less slack
                timeout = self.keepalive_timeout if req is None else 60.0
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
                except asyncio.TimeoutError:
                    return None
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                headers: dict[str, str] = {}
                for name, value in event.headers:
                    key, val = name.decode("latin-1").lower(), value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {val}" if key in headers else val
                if "cookie" in headers:
                    headers["cookie"] = headers["cookie"].replace(", ", "; ")
                req = Request(event.method.decode("ascii"), event.target.decode("latin-1"), headers, tls=tls)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    await self._send(
                        conn, writer, json_response(413, {"error": "body too large"}), close=True
                    )
                    return None
            elif isinstance(event, h11.EndOfMessage):
                if req is None:
                    return None
                req.body = bytes(body)
                return req
            else:  # ConnectionClosed, PAUSED
                return None

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, resp: Response, *, close: bool = False
    ) -> None:
        headers = [(k.encode(), v.encode("latin-1")) for k, v in resp.headers]
        headers.append((b"date", email.utils.formatdate(usegmt=True).encode()))
        if resp.status not in (204, 304):
            headers.append((b"content-length", str(len(resp.body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        chunks = [conn.send(h11.Response(status_code=resp.status, headers=headers))]
        if resp.body and resp.status not in (204, 304):
            chunks.append(conn.send(h11.Data(data=resp.body)))
        chunks.append(conn.send(h11.EndOfMessage()))
        writer.write(b"".join(c for c in chunks if c))
        await writer.drain()
