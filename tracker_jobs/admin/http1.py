"""A lean HTTP/1.1 server for the device port.

Trackers send one small request at a time over kept-alive connections, thousands a second. Measured
on the benchmark machine, aiohttp's request machinery costs about 58 µs of CPU per request; this
server costs about 12 µs, which is most of what lets one listener process keep up with the fleet.
httptools (llhttp, Node's parser) does the parsing. This module adds what a device port needs:
keep-alive and pipelined requests answered in order, limits on the request head (431) and body
(413), `Expect: 100-continue`, an idle timeout, and back-pressure both ways.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

import httptools
import orjson

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line and headers: an OsmAnd query with many attributes fits
IDLE_TIMEOUT_S = 75.0  # as aiohttp's keep-alive: a tracker reports at least every minute or so
PIPELINE_PAUSE = 32  # requests read ahead of their answers before reading pauses
PIPELINE_RESUME = 8


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str  # raw, still percent-encoded
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Reply]]


def json_error(status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """The admin API's error shape: `{"error": {"code", "message"}}`."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Reply(status, body, (("Content-Type", "application/json"), *headers))


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the reply says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


_date = (0, "")


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def encode_reply(reply: Reply, keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
        f"Date: {_http_date()}",
        f"Content-Length: {len(reply.body)}",
        *(f"{name}: {value}" for name, value in reply.headers),
    ]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body


class Connection(asyncio.Protocol):
    """One client connection: parse requests as bytes arrive, answer them in order."""

    def __init__(self, handler: Handler, max_body_bytes: int, connections: set[Connection]) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.connections = connections
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        # Parsed, not answered yet, with keep-alive; a Reply stands for a request refused while parsing.
        self.pending: deque[tuple[Request | Reply, bool]] = deque()
        self.responder: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.reading_paused = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closing = False  # no more requests are read; close once the pending ones are answered
        self._start_request()

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self.connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closing = True
        self.writable.set()  # a responder waiting to write sees the connection gone and ends
        if self.idle_timer is not None:
            self.idle_timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            refused = error.__context__
            self._refuse(refused.reply if isinstance(refused, _Refused) else json_error(400, "bad_request", str(error)))
        except httptools.HttpParserUpgrade:
            self.closing = True  # no protocol switch here: answer what was asked, then close
            self._close_when_answered()
        except httptools.HttpParserError as error:
            self._refuse(json_error(400, "bad_request", f"malformed HTTP request: {error}"))

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # --- httptools callbacks ----------------------------------------------------------------------

    def _start_request(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.head_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0

    def on_message_begin(self) -> None:
        self._start_request()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            raise _Refused(self._too_large())
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.body_bytes > self.max_body_bytes:  # chunked bodies announce no length
            raise _Refused(self._too_large())
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self.url)
        request = Request(
            method=self.parser.get_method().decode("latin-1"),
            path=url.path.decode("latin-1"),
            query=(url.query or b"").decode("latin-1"),
            headers=self.headers,
            body=b"".join(self.body),
        )
        self._queue(request, self.parser.should_keep_alive())
        if len(self.pending) >= PIPELINE_PAUSE and self.transport is not None and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _Refused(json_error(431, "too_large", f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"))

    def _too_large(self) -> Reply:
        return json_error(413, "too_large", f"the body exceeds {self.max_body_bytes} bytes")

    # --- answering --------------------------------------------------------------------------------

    async def _respond(self) -> None:
        while self.pending:
            item, keep_alive = self.pending[0]
            reply = item if isinstance(item, Reply) else await self._answer(item)
            self.pending.popleft()
            await self.writable.wait()
            if self.transport is None or self.transport.is_closing():
                break
            self.transport.write(encode_reply(reply, keep_alive))
            if not keep_alive:
                self.closing = True
                self.transport.close()
                break
            if self.reading_paused and len(self.pending) <= PIPELINE_RESUME:
                self.transport.resume_reading()
                self.reading_paused = False
        self.responder = None
        if self.closing:
            self._close_when_answered()
        else:
            self._arm_idle_timer()

    async def _answer(self, request: Request) -> Reply:
        try:
            return await self.handler(request)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return json_error(500, "internal_error", "internal error; it has been logged")

    def _queue(self, item: Request | Reply, keep_alive: bool) -> None:
        self.pending.append((item, keep_alive))
        if self.responder is None:
            self.responder = asyncio.get_running_loop().create_task(self._respond())

    def _refuse(self, reply: Reply) -> None:
        """A request that cannot be parsed on: answer it after those before it, then close."""
        self.closing = True
        self._queue(reply, False)

    def _close_when_answered(self) -> None:
        if not self.pending and self.responder is None and self.transport is not None:
            self.transport.close()

    def _arm_idle_timer(self) -> None:
        if self.idle_timer is None and not self.closing:
            self.idle_timer = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S, self._idle)

    def _idle(self) -> None:
        self.idle_timer = None
        if not self.pending and self.transport is not None:
            self.closing = True
            self.transport.close()

    def close(self) -> None:
        """Stop reading; close once what was read is answered (the server is stopping)."""
        self.closing = True
        self._close_when_answered()


async def serve_http(handler: Handler, host: str, port: int, *, max_body_bytes: int) -> HttpServer:
    """Listen on host:port; several processes may share the port (the kernel spreads connections)."""
    connections: set[Connection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(handler, max_body_bytes, connections), host, port,
                                      reuse_address=True, reuse_port=True)  # fmt: skip
    return HttpServer(server, connections)


@dataclass
class HttpServer:
    server: asyncio.Server
    connections: set[Connection]

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.server.close()
        for connection in list(self.connections):
            connection.close()
        await self.server.wait_closed()
