"""A lean HTTP/1.1 server for the device port.

Trackers send one small request at a time over kept-alive connections, thousands a second.
`bench/http_servers.py` measures it beside aiohttp (about 1.4x its CPU per request) and uvicorn's
httptools mode (about the same, but without the limits below). httptools (llhttp, Node's parser)
does the parsing. This module adds what a device port needs:
keep-alive and pipelined requests answered in order, limits on the request head (431) and body
(413), `Expect: 100-continue`, deadlines and back-pressure against clients that are slow to
send or never read, and caps on open connections, overall and per client address, so that one client
cannot take every file descriptor of the process (the admin API, Redis and the database share them).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

import httptools
import orjson

from tracker_jobs.core.errors import error_document

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line and headers: an OsmAnd query with many attributes fits
FEED_BYTES = 4096  # bytes parsed at a time: how far past a limit a request can get before it is refused
IDLE_TIMEOUT_S = 75.0  # between requests, as aiohttp's keep-alive: a tracker reports every minute or so
REQUEST_TIMEOUT_S = 30.0  # from a request's first byte to its last: a trickling sender is cut off
WRITE_TIMEOUT_S = 30.0  # a client that stops reading its answers for this long is dropped
CLOSE_GRACE_S = 10.0  # on shutdown, requests being answered get this long to finish
PIPELINE_PAUSE = 32  # requests read ahead of their answers before reading pauses
PIPELINE_RESUME = 8
MAX_CONNECTIONS = 10_000  # serve_http's default cap on open connections
MAX_CONNECTIONS_PER_ADDRESS = 1_000  # and from one client address: not tiny, trackers behind a gateway share it
# Descriptors always left to the rest of the process (admin API, Redis, database, log files) however
# many connections are asked for: at least this many, or a tenth of the limit when that is more. It also
# covers what a refusal holds: a burst of accepts (one listen backlog, about 100) and the lingering below.
DESCRIPTOR_RESERVE = 256
REFUSED_RETRY_AFTER_S = 10  # idle connections free their slots over time; trackers retry on their own
# A refused client may have sent its request already; closing with it unread would reset the connection
# and could destroy the 503 before the client reads it. So the server half-closes, reads and drops what
# comes, and closes when the client does, for at most this long and this many refusals at a time.
REFUSAL_LINGER_S = 2.0
MAX_LINGERING_REFUSALS = 32
REFUSAL_LOG_INTERVAL_S = 10.0  # at most one log line per cap this often, however many are refused


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

    @property
    def charset(self) -> str | None:
        for parameter in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset":
                return value.strip().strip('"') or None
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Reply]]


def json_error(status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """The engine's error shape, `{"error": {"code", "message"}}`, as every transport answers it."""
    body = orjson.dumps(error_document(code, message))
    return Reply(status, body, (("Content-Type", "application/json"), *headers))


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the reply says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


@dataclass(slots=True)
class _Pending:
    """A parsed request (or the refusal of one) waiting for its answer, and how to frame that answer."""

    item: Request | Reply
    keep_alive: bool
    http_1_0: bool = False
    head: bool = False  # a HEAD request: the answer carries no body


_date = (0, "")


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def encode_reply(reply: Reply, pending: _Pending) -> bytes:
    lines = [
        f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
        f"Date: {_http_date()}",
        f"Content-Length: {len(reply.body)}",
        *(f"{name}: {value}" for name, value in reply.headers),
    ]
    if not pending.keep_alive:
        lines.append("Connection: close")
    elif pending.http_1_0:
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if pending.head else head + reply.body


class _RefusalLog:
    """Refused connections logged at WARNING at most once per REFUSAL_LOG_INTERVAL_S and cap, each line
    with how many were refused since the last: a flood of connections must not become a flood of log
    lines. What a burst leaves unlogged is written once the interval has passed, even if it was the end."""

    def __init__(self) -> None:
        self.unlogged: dict[str, int] = {}  # per cap: refused, not yet logged
        self.latest: dict[str, tuple[str, str]] = {}  # per cap: (the cap's description, the last address)
        self.quiet_until: dict[str, float] = {}  # per cap: no line before this loop time
        self.timers: dict[str, asyncio.TimerHandle] = {}

    def refused(self, cap: str, description: str, address: str) -> None:
        self.unlogged[cap] = self.unlogged.get(cap, 0) + 1
        self.latest[cap] = (description, address)
        loop = asyncio.get_running_loop()
        quiet_until = self.quiet_until.get(cap, 0.0)
        if loop.time() >= quiet_until:
            self._write(cap)
        elif cap not in self.timers:
            self.timers[cap] = loop.call_at(quiet_until, self._write, cap)

    def _write(self, cap: str) -> None:
        timer = self.timers.pop(cap, None)
        if timer is not None:
            timer.cancel()
        count = self.unlogged.pop(cap, 0)
        if count:
            self.quiet_until[cap] = asyncio.get_running_loop().time() + REFUSAL_LOG_INTERVAL_S
            description, address = self.latest[cap]
            log.warning(
                "device port %s: refused %d connection(s) with 503 since the last such line, the latest from %s",
                description,
                count,
                address,
            )

    def flush(self) -> None:
        """The server is stopping: write what is still unlogged now."""
        for cap in list(self.timers):
            self._write(cap)


class _Slots:
    """The server's open connections, overall and per client address, against its caps. Only a served
    connection holds a slot; an address's entry goes with its last connection, so a scan from many
    addresses leaves nothing behind."""

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.connections: set[Connection] = set()
        self.per_address: dict[str, int] = {}
        self.lingering: set[Connection] = set()  # refused: answered, waiting a moment for the client to close
        self.refusals = _RefusalLog()

    def take(self, connection: Connection) -> Reply | None:
        """Give the connection a slot, or the 503 that refuses it."""
        if len(self.connections) >= self.max_connections:
            description = f"at its cap of {self.max_connections} connections"
            self.refusals.refused("overall", description, connection.address)
            return self._refusal("the device port has too many open connections; try again later")
        held = self.per_address.get(connection.address, 0)
        if held >= self.max_per_address:
            description = f"at its cap of {self.max_per_address} connections per client address"
            self.refusals.refused("per address", description, connection.address)
            return self._refusal(
                f"too many open connections from {connection.address} (at most {self.max_per_address}); "
                "close idle ones or try again later"
            )
        self.connections.add(connection)
        self.per_address[connection.address] = held + 1
        return None

    def give_back(self, connection: Connection) -> None:
        self.lingering.discard(connection)
        if connection in self.connections:
            self.connections.remove(connection)
            held = self.per_address[connection.address] - 1
            if held:
                self.per_address[connection.address] = held
            else:
                del self.per_address[connection.address]

    @staticmethod
    def _refusal(message: str) -> Reply:
        return json_error(503, "too_many_connections", message, (("Retry-After", str(REFUSED_RETRY_AFTER_S)),))


class Connection(asyncio.Protocol):
    """One client connection: parse requests as bytes arrive, answer them in order."""

    def __init__(self, handler: Handler, max_body_bytes: int, slots: _Slots) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.slots = slots
        self.address = ""  # the client's, without the port: what the per-address cap counts
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Pending] = deque()  # parsed, not answered yet, in order
        self.unparsed = b""  # read while too many requests wait for their answers
        self.responder: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.reading_paused = False
        self.timer: asyncio.TimerHandle | None = None  # the idle, request or write deadline running now
        self.closing = False  # no more requests are read; close once the pending ones are answered
        self.in_message = False
        self.in_head = False
        self._start_request()

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        peer = transport.get_extra_info("peername")
        self.address = client_address(peer[0]) if isinstance(peer, tuple) else str(peer or "")  # IPv4 and IPv6
        refusal = self.slots.take(self)
        if refusal is not None:
            self._refuse_connection(self.transport, refusal)
            return
        self._deadline(IDLE_TIMEOUT_S)

    def _refuse_connection(self, transport: asyncio.Transport, refusal: Reply) -> None:
        """Over a cap: the 503 goes out at once, before anything is read, and nothing is ever parsed."""
        self.closing = True  # data_received drops whatever the client sends
        transport.write(encode_reply(refusal, _Pending(refusal, keep_alive=False)))
        if len(self.slots.lingering) < MAX_LINGERING_REFUSALS and transport.can_write_eof():
            self.slots.lingering.add(self)
            transport.write_eof()  # eof_received closes when the client does
            self._deadline(REFUSAL_LINGER_S)
        else:
            transport.close()  # too many lingering: the descriptor matters more than a clean close

    def connection_lost(self, exc: Exception | None) -> None:
        self.slots.give_back(self)
        self.closing = True
        self.pending.clear()
        self.writable.set()  # a responder waiting to write sees the connection gone and ends
        self._deadline(None)

    def data_received(self, data: bytes) -> None:
        if not self.closing:
            self._feed(data)

    def eof_received(self) -> bool:
        """The client sent all it will (a half-close): answer what it asked, then close."""
        self.closing = True
        self._close_when_answered()
        return True  # keep the transport open for the answers

    def pause_writing(self) -> None:
        self.writable.clear()
        self._deadline(WRITE_TIMEOUT_S)

    def resume_writing(self) -> None:
        self.writable.set()
        # Back to the deadline the connection had: a request half read, or idle, or none while answering.
        self._deadline(REQUEST_TIMEOUT_S if self.in_message else IDLE_TIMEOUT_S if self.responder is None else None)

    # --- parsing ----------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Parse in slices, so limits hold within a slice of being crossed and a flood of pipelined
        requests is read no further ahead than PIPELINE_PAUSE (the rest waits as bytes)."""
        for start in range(0, len(data), FEED_BYTES):
            if self.closing:
                return
            if len(self.pending) >= PIPELINE_PAUSE:
                self.unparsed += data[start:]
                if self.transport is not None and not self.reading_paused:
                    self.transport.pause_reading()
                    self.reading_paused = True
                return
            piece = data[start : start + FEED_BYTES]
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserCallbackError as error:
                refused = error.__context__
                if not isinstance(refused, _Refused):
                    log.error("cannot parse a request", exc_info=refused)
                    refused = _Refused(json_error(400, "bad_request", "malformed HTTP request"))
                self._refuse(refused.reply)
                return
            except httptools.HttpParserUpgrade:
                self._no_upgrade()
                return
            except httptools.HttpParserError as error:
                self._refuse(json_error(400, "bad_request", f"malformed HTTP request: {error}"))
                return
            # Counted per slice: httptools buffers a header until the next begins, so one endless
            # header would never reach on_header; an endless chunked body never reaches on_body.
            if self.in_head:
                self.head_read += len(piece)  # may count a slice's bytes before the head began
                if self.head_read > MAX_HEAD_BYTES + FEED_BYTES:
                    self._refuse(self._head_too_large())
                    return
            if self.in_message:
                self.message_bytes += len(piece)
                if self.message_bytes > 2 * (self.max_body_bytes + MAX_HEAD_BYTES):  # body, framing, trailers
                    self._refuse(self._too_large())
                    return

    def _start_request(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.head_bytes = 0  # of the request line and headers parsed so far
        self.head_read = 0  # of the slices read while the head was still open
        self.message_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0

    def on_message_begin(self) -> None:
        self._start_request()
        self.in_message = self.in_head = True
        self._deadline(REQUEST_TIMEOUT_S)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:  # trailers after a chunked body are read and ignored
            self._count_head(len(name) + len(value) + 4)
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def _count_head(self, size: int) -> None:
        """Exact for the parts parsed so far; `_feed` counts the part httptools still holds."""
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _Refused(self._head_too_large())

    def _head_too_large(self) -> Reply:
        return json_error(431, "too_large", f"the request head exceeds {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        self.in_head = False
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            raise _Refused(self._too_large())
        if (
            self.headers.get("expect", "").lower() == "100-continue"
            and self.parser.get_http_version() == "1.1"  # an HTTP/1.0 client's expectation is ignored
            and not self.pending  # never ahead of an earlier request's answer
            and self.responder is None
            and self.transport is not None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.body_bytes > self.max_body_bytes:  # chunked bodies announce no length
            raise _Refused(self._too_large())
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.in_message = False
        self._deadline(None)
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            raise _Refused(json_error(400, "bad_request", "the request target is not a URL path")) from None
        method = self.parser.get_method().decode("latin-1")
        request = Request(
            method=method,
            path=(url.path or b"/").decode("latin-1"),  # an absolute URL may have no path
            query=(url.query or b"").decode("latin-1"),
            headers=self.headers,
            body=b"".join(self.body),
        )
        http_1_0 = self.parser.get_http_version() == "1.0"
        self._queue(_Pending(request, self.parser.should_keep_alive(), http_1_0, method == "HEAD"))

    def _too_large(self) -> Reply:
        return json_error(413, "too_large", f"the body exceeds {self.max_body_bytes} bytes")

    def _no_upgrade(self) -> None:
        """No protocol switch here. The upgrade request was queued; llhttp skipped any body it had,
        so one with a body is refused rather than answered as if empty. Then the connection closes."""
        last = self.pending[-1] if self.pending else None
        if last is not None and isinstance(last.item, Request):
            declared = last.item.headers.get("content-length", "0") not in ("", "0")
            if declared or "transfer-encoding" in last.item.headers:
                last.item = json_error(400, "bad_request", "upgrade requests with a body are not supported")
            last.keep_alive = False
        self.closing = True
        self._close_when_answered()

    # --- answering --------------------------------------------------------------------------------

    def _queue(self, pending: _Pending) -> None:
        self.pending.append(pending)
        if self.responder is None:
            self.responder = asyncio.get_running_loop().create_task(self._respond())

    def _refuse(self, reply: Reply) -> None:
        """A request that cannot be parsed on: answer it after those before it, then close."""
        self.closing = True
        self._deadline(None)
        self._queue(_Pending(reply, keep_alive=False))

    async def _respond(self) -> None:
        try:
            while self.pending:
                pending = self.pending[0]
                reply = pending.item if isinstance(pending.item, Reply) else await self._answer(pending.item)
                await self.writable.wait()
                if not self.pending or self.transport is None or self.transport.is_closing():
                    return  # the connection went away meanwhile
                self.pending.popleft()
                if self.closing and not self.pending:
                    pending.keep_alive = False  # the last answer before closing says so
                self.transport.write(encode_reply(reply, pending))
                if not pending.keep_alive:
                    self.closing = True
                    self.transport.close()
                    return
                if self.reading_paused and len(self.pending) <= PIPELINE_RESUME:
                    self._resume_reading()
        finally:
            self.responder = None
            if self.closing:
                self._close_when_answered()
            elif not self.in_message:
                self._deadline(IDLE_TIMEOUT_S)

    async def _answer(self, request: Request) -> Reply:
        try:
            return await self.handler(request)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return json_error(500, "internal_error", "internal error; it has been logged")

    def _resume_reading(self) -> None:
        unparsed, self.unparsed = self.unparsed, b""
        self._feed(unparsed)
        if not self.unparsed and self.transport is not None and not self.closing:
            self.reading_paused = False
            self.transport.resume_reading()

    def _close_when_answered(self) -> None:
        if not self.pending and self.responder is None and self.transport is not None:
            self.transport.close()

    def _deadline(self, seconds: float | None) -> None:
        """Run one deadline at a time (idle, request or write); past it, the connection is dropped."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None if seconds is None else asyncio.get_running_loop().call_later(seconds, self.abort)

    def abort(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Stop reading; close once what was read is answered (the server is stopping)."""
        self.closing = True
        self._close_when_answered()


def raise_descriptor_limit() -> int | None:
    """Raise the process's soft limit on open files to its hard limit (the soft one is often 1,024, far
    below what a device port needs); return the limit in force, None when there is none."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:  # e.g. macOS refuses an unlimited hard limit as the soft one
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, error)
    return None if soft == resource.RLIM_INFINITY else soft


def client_address(host: str) -> str:
    """What the per-address cap counts: an IPv4 address, or an IPv6 client's /64 (one subscriber commonly
    holds a whole /64, so counting single IPv6 addresses would give it billions of budgets)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def connection_cap(max_connections: int, descriptor_limit: int | None) -> int:
    """The most connections the server may hold: as many as asked, but never so many that the rest of
    the process (admin API, Redis, database) is left without descriptors."""
    if descriptor_limit is None:
        return max_connections
    reserve = max(DESCRIPTOR_RESERVE, descriptor_limit // 10)
    return max(1, min(max_connections, descriptor_limit - reserve))


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_body_bytes: int,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
) -> HttpServer:
    """Listen on host:port; several processes may share the port (the kernel spreads connections, and
    each process applies the caps to its own). A connection over either cap is answered 503 and closed;
    `max_connections` is lowered if the open-file limit would leave the process too few descriptors."""
    if max_connections < 1 or max_connections_per_address < 1:
        raise ValueError("max_connections and max_connections_per_address must be at least 1")
    descriptor_limit = raise_descriptor_limit()
    cap = connection_cap(max_connections, descriptor_limit)
    # One address may never hold more than half the slots, or a single client could shut out every device.
    per_address = min(max_connections_per_address, max(1, cap // 2))
    if per_address < max_connections_per_address:
        log.warning(
            "connections per client address lowered from %d to %d: half of the %d the server may hold",
            max_connections_per_address,
            per_address,
            cap,
        )
    slots = _Slots(cap, per_address)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(handler, max_body_bytes, slots), host, port, reuse_address=True, reuse_port=True
    )
    http_server = HttpServer(server, slots)
    log.info(
        "HTTP server on port %d takes at most %d connections (%d asked; open-file limit %s) and %d per client address",
        http_server.port,
        cap,
        max_connections,
        "none" if descriptor_limit is None else descriptor_limit,
        per_address,
    )
    return http_server


@dataclass
class HttpServer:
    server: asyncio.Server
    slots: _Slots

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> set[Connection]:
        """The connections being served (not those refused)."""
        return self.slots.connections

    @property
    def connections_per_address(self) -> Mapping[str, int]:
        """Open connections per client address; an address without any has no entry."""
        return self.slots.per_address

    @property
    def max_connections(self) -> int:
        """The overall cap in force: as asked, or lower to leave the process descriptors."""
        return self.slots.max_connections

    @property
    def max_connections_per_address(self) -> int:
        return self.slots.max_per_address

    async def close(self) -> None:
        """Stop accepting; let requests being answered finish (a 200 is never cut off half-sent), up to
        CLOSE_GRACE_S; then drop what is left."""
        self.server.close()
        for connection in list(self.connections):
            connection.close()
        answering = [c.responder for c in self.connections if c.responder is not None]
        if answering:
            await asyncio.wait(answering, timeout=CLOSE_GRACE_S)
        for connection in [*self.connections, *self.slots.lingering]:
            connection.abort()
        self.slots.refusals.flush()
        await self.server.wait_closed()
