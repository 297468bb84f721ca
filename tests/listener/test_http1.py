"""The device port's lean HTTP/1.1 server, spoken to over raw sockets: keep-alive, pipelining, limits,
malformed input, idle connections, caps on open connections. The handler echoes what it was given, so each test can see what the
server parsed."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from tracker_jobs.listener import http1
from tracker_jobs.listener.http1 import Reply, Request, client_address, connection_cap, serve_http

MAX_BODY = 1024


async def echo(request: Request) -> Reply:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/slow":
        await asyncio.sleep(0.05)
    if request.path == "/slower":
        await asyncio.sleep(0.3)
    document = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "type": request.content_type,
        "body": request.body.decode(),
    }
    return Reply(200, orjson.dumps(document), (("Content-Type", "application/json"),))


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY)
    yield server.port
    await server.close()


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if line)
    body = await reader.readexactly(int(headers["Content-Length"]))
    return int(head[0].split(" ")[1]), headers, body


async def ended(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection: an end of stream, or a reset when it left our bytes unread."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def exchange(port: int, raw: bytes, replies: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    answers = [await asyncio.wait_for(read_reply(reader), 5) for _ in range(replies)]
    writer.close()
    return answers


async def test_keep_alive_serves_many_requests_on_one_connection(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for index in range(3):
        writer.write(f"GET /?id=d{index}&lat=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = await read_reply(reader)
        assert status == 200
        assert orjson.loads(body)["query"] == f"id=d{index}&lat=1"
        assert "Connection" not in headers
        assert "Date" in headers
    writer.close()


async def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    # The first takes longest: answers must still come back in the order asked.
    raw = b"".join(
        f"GET {path}?n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n, path in enumerate(["/slow", "/", "/slow", "/"])
    )
    answers = await exchange(port, raw, replies=4)
    assert [orjson.loads(body)["query"] for _, _, body in answers] == ["n=0", "n=1", "n=2", "n=3"]


async def test_post_bodies_plain_and_chunked(port: int) -> None:
    form = b"id=d1&lat=1&lon=2"
    plain = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(form), form)
    )
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nid=d1\r\n6\r\n&lat=1\r\n0\r\n\r\n"
    (_, _, first), (_, _, second) = await exchange(port, plain + chunked, replies=2)
    assert orjson.loads(first)["body"] == "id=d1&lat=1&lon=2"
    assert orjson.loads(first)["type"] == "application/x-www-form-urlencoded"
    assert orjson.loads(second)["body"] == "id=d1&lat=1"


async def test_expect_continue_is_answered_before_the_body(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"abc")
    status, _, body = await read_reply(reader)
    assert (status, orjson.loads(body)["body"]) == (200, "abc")
    writer.close()


async def test_http_1_0_and_connection_close_end_the_connection(port: int) -> None:
    for raw in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        status, headers, _ = await read_reply(reader)
        assert (status, headers["Connection"]) == (200, "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()


@pytest.mark.parametrize(
    ("raw", "status", "problem"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413, "the body exceeds 1024 bytes"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"a" * 2048 + b"\r\n0\r\n\r\n",
            413,
            "the body exceeds 1024 bytes",
        ),
        (b"GET /?" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", 431, "exceed"),
        (b"GET / HTTP/1.1\r\n" + b"X-Filler: y\r\n" * 2000 + b"\r\n", 431, "exceed"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", 400, "malformed HTTP request"),
        (b"GET / HTTP/1.1\r\nContent-Length: -4\r\n\r\n", 400, "malformed HTTP request"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 100_000, 431, "exceed"),  # one header, never finished
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"a" * 400_000, 413, "exceeds"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, "not a URL path"),
        (
            b"POST / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nhello",
            400,
            "upgrade requests with a body",
        ),
    ],
    ids=[
        "declared-too-large",
        "chunked-too-large",
        "long-url",
        "many-headers",
        "tls-hello",
        "bad-length",
        "endless-header",
        "endless-chunk-extension",
        "connect",
        "upgrade-with-body",
    ],
)
async def test_bad_requests_get_a_json_error_and_the_connection_closes(
    port: int, raw: bytes, status: int, problem: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    answered, headers, body = await asyncio.wait_for(read_reply(reader), 5)
    assert answered == status
    assert headers["Connection"] == "close"
    assert problem in orjson.loads(body)["error"]["message"]
    assert await ended(reader)
    writer.close()


async def test_requests_before_a_malformed_one_are_still_answered(port: int) -> None:
    answers = await exchange(port, b"GET /?n=1 HTTP/1.1\r\nHost: x\r\n\r\nNONSENSE\r\n\r\n", replies=2)
    assert [status for status, _, _ in answers] == [200, 400]


async def test_a_handler_error_is_a_500_json_and_the_connection_survives(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await read_reply(reader)
    assert (status, orjson.loads(body)["error"]["code"]) == (500, "internal_error")
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_reply(reader))[0] == 200
    writer.close()


async def test_an_idle_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "IDLE_TIMEOUT_S", 0.2)
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_reply(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed once idle
        writer.close()
    finally:
        await server.close()


async def test_closing_the_server_waits_for_the_answers_being_made() -> None:
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /slower HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)  # the request is being answered
    started = asyncio.get_running_loop().time()
    await server.close()
    assert asyncio.get_running_loop().time() - started >= 0.2  # close waited for the handler
    status, headers, _ = await asyncio.wait_for(read_reply(reader), 0.1)  # already sent
    assert (status, headers["Connection"]) == (200, "close")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.parametrize(
    ("raw", "limit"),
    [
        (b"GET / HTTP/1.1\r\nHost", "REQUEST_TIMEOUT_S"),
        (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab", "REQUEST_TIMEOUT_S"),
        (b"", "IDLE_TIMEOUT_S"),
    ],
    ids=["trickled-head", "trickled-body", "silent"],
)
async def test_slow_or_silent_clients_are_cut_off(monkeypatch: pytest.MonkeyPatch, raw: bytes, limit: str) -> None:
    monkeypatch.setattr(http1, limit, 0.2)
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped
        writer.close()
    finally:
        await server.close()


async def test_a_client_that_never_reads_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "WRITE_TIMEOUT_S", 0.3)
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY)
    try:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", server.port))
        client.setblocking(False)
        _, writer = await asyncio.open_connection(sock=client)
        writer.write(b"GET / HTTP/1.1\r\n\r\n" * 200_000)  # ~4 MB asked, ~40 MB of answers never read
        for _ in range(100):
            await asyncio.sleep(0.1)
            if not server.connections:
                break
        assert not server.connections
        writer.transport.abort()
    finally:
        await server.close()


async def test_a_pipelined_flood_is_read_no_further_than_its_answers() -> None:
    most_waiting = 0
    server: http1.HttpServer

    async def counting(request: Request) -> Reply:
        nonlocal most_waiting
        most_waiting = max([most_waiting, *(len(c.pending) for c in server.connections)])
        return await echo(request)

    server = await serve_http(counting, "127.0.0.1", 0, max_body_bytes=MAX_BODY)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(b"GET /?n=%d HTTP/1.1\r\n\r\n" % n for n in range(5000)))  # one write
        answers = [await asyncio.wait_for(read_reply(reader), 5) for _ in range(5000)]
        assert [orjson.loads(body)["query"] for _, _, body in answers[-2:]] == ["n=4998", "n=4999"]
        assert most_waiting <= http1.PIPELINE_PAUSE + http1.FEED_BYTES // 20  # not thousands
        writer.close()
    finally:
        await server.close()


async def test_head_answers_carry_no_body(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /?next HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: " in head
    status, _, body = await read_reply(reader)  # the next answer follows the head at once
    assert (status, orjson.loads(body)["query"]) == (200, "next")
    writer.close()


async def test_odd_but_valid_requests(port: int) -> None:
    answers = await exchange(port, b"GET http://tracker:5055?id=7 HTTP/1.1\r\nHost: tracker\r\n\r\n")
    assert orjson.loads(answers[0][2])["path"] == "/"  # an absolute URL without a path
    # Expect: 100-continue from HTTP/1.0 is ignored: the first thing back is the answer.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: keep-alive\r\n\r\nab")
    status, headers, body = await read_reply(reader)
    assert (status, headers["Connection"], orjson.loads(body)["body"]) == (200, "keep-alive", "ab")
    # A client that half-closes after asking still gets its answer.
    writer.write(b"GET /?last HTTP/1.1\r\nHost: x\r\n\r\n")
    writer.write_eof()
    assert (await read_reply(reader))[0] == 200
    assert await ended(reader)
    writer.close()


async def test_an_upgrade_request_is_answered_and_the_connection_closes(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /?up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    status, headers, body = await read_reply(reader)
    assert (status, headers["Connection"], orjson.loads(body)["query"]) == (200, "close", "up")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[..., Awaitable[Stream]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open connections from a chosen source address (every 127.x.y.z is this machine on Linux, so a test
    can be many clients); all are closed when the test ends."""
    writers: list[asyncio.StreamWriter] = []

    async def open_from(port: int, source: str = "127.0.0.1") -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writers.append(writer)
        return reader, writer

    yield open_from
    for writer in writers:
        writer.close()
        await writer.wait_closed()


async def served(stream: Stream) -> bool:
    reader, writer = stream
    writer.write(b"GET /?id=d1 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await asyncio.wait_for(read_reply(reader), 5)
    return status == 200 and orjson.loads(body)["query"] == "id=d1"


async def refused(stream: Stream) -> str:
    """Ask as a tracker does, at once: the answer is a 503 and the end. Returns its message."""
    reader, writer = stream
    writer.write(b"GET /?id=d1 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await asyncio.wait_for(read_reply(reader), 5)
    assert (status, headers["Connection"], headers["Content-Type"]) == (503, "close", "application/json")
    assert int(headers["Retry-After"]) > 0
    error = orjson.loads(body)["error"]
    assert error["code"] == "too_many_connections"
    assert await ended(reader)
    return str(error["message"])


async def until(condition: Callable[[], bool]) -> None:
    """The server sees a client's close a loop turn or two after it happens."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never got there")


async def test_connections_past_the_per_address_cap_get_a_503_and_the_others_still_work(connect: Connect) -> None:
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY, max_connections_per_address=3)
    try:
        held = [await connect(server.port) for _ in range(3)]
        assert all([await served(stream) for stream in held])
        assert "too many open connections from 127.0.0.1" in await refused(await connect(server.port))
        assert all([await served(stream) for stream in held])  # the earlier ones are untouched
        assert await served(await connect(server.port, "127.0.0.2"))  # another address has its own slots
        assert server.connections_per_address == {"127.0.0.1": 3, "127.0.0.2": 1}
    finally:
        await server.close()


async def test_connections_past_the_overall_cap_get_a_503_and_the_others_still_work(connect: Connect) -> None:
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY, max_connections=3)
    try:
        held = [await connect(server.port, f"127.0.0.{n}") for n in (1, 2, 3)]  # each under its own cap
        assert all([await served(stream) for stream in held])
        message = await refused(await connect(server.port, "127.0.0.4"))
        assert "the device port has too many open connections" in message
        assert all([await served(stream) for stream in held])
        assert len(server.connections) == 3
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("caps", "sources"),
    [
        ({"max_connections_per_address": 2}, ["127.0.0.1", "127.0.0.1", "127.0.0.1"]),
        ({"max_connections": 2}, ["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
    ],
    ids=["per-address", "overall"],
)
async def test_closing_a_connection_frees_its_slot(connect: Connect, caps: dict[str, int], sources: list[str]) -> None:
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY, **caps)
    try:
        first, second = await connect(server.port, sources[0]), await connect(server.port, sources[1])
        assert await served(first)
        assert await served(second)
        await refused(await connect(server.port, sources[2]))
        first[1].close()
        await until(lambda: len(server.connections) == 1)
        assert await served(await connect(server.port, sources[2]))  # served again
        await refused(await connect(server.port, sources[2]))  # and full again
        second[1].transport.abort()  # a reset frees its slot as a close does
        await until(lambda: len(server.connections) == 1)
        assert await served(await connect(server.port, sources[1]))
    finally:
        await server.close()


async def test_counts_return_to_zero_when_clients_disconnect(monkeypatch: pytest.MonkeyPatch, connect: Connect) -> None:
    monkeypatch.setattr(http1, "REFUSAL_LINGER_S", 0.2)
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY, max_connections_per_address=2)
    try:
        streams = [await connect(server.port, f"127.0.0.{n}") for n in (1, 1, 2, 3)]
        assert all([await served(stream) for stream in streams])
        assert server.connections_per_address == {"127.0.0.1": 2, "127.0.0.2": 1, "127.0.0.3": 1}
        # A refused client that never closes is let go after the linger, and holds no slot meanwhile.
        reader, _ = await connect(server.port, "127.0.0.1")
        assert (await asyncio.wait_for(read_reply(reader), 5))[0] == 503
        assert server.slots.lingering
        assert server.connections_per_address["127.0.0.1"] == 2
        await until(lambda: not server.slots.lingering)
        streams[0][1].close()  # a close
        streams[1][1].transport.abort()  # a reset
        streams[2][1].write_eof()  # a half-close: the server closes its side in turn
        assert await ended(streams[2][0])
        await until(lambda: server.connections_per_address == {"127.0.0.3": 1})
        streams[3][1].close()
        await until(lambda: not server.connections and not server.connections_per_address)
    finally:
        await server.close()


async def test_refusals_are_logged_but_not_one_line_each(caplog: pytest.LogCaptureFixture, connect: Connect) -> None:
    caplog.set_level(logging.WARNING, logger=http1.__name__)
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY, max_connections_per_address=1)
    assert await served(await connect(server.port))
    for _ in range(5):
        await refused(await connect(server.port))
    lines = [record.getMessage() for record in caplog.records if record.name == http1.__name__]
    assert len(lines) == 1  # the first refusal is told at once, the next four wait for the interval
    assert "cap of 1 connections per client address: refused 1 connection(s)" in lines[0]
    await server.close()  # what is still untold is told on the way out
    lines = [record.getMessage() for record in caplog.records if record.name == http1.__name__]
    assert len(lines) == 2
    assert "refused 4 connection(s)" in lines[1]
    assert "the latest from 127.0.0.1" in lines[1]


async def test_the_open_file_limit_is_raised_and_the_cap_leaves_a_reserve() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip("needs a finite hard open-file limit above 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # lowering the soft limit is always allowed
    try:
        server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY, max_connections=10 * hard)
        await server.close()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
        assert server.max_connections == hard - max(256, hard // 10)  # asked for more than can be had
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    ("asked", "limit", "cap"),
    [
        (10_000, None, 10_000),  # no limit
        (10_000, 1_048_576, 10_000),  # plenty
        (10_000, 1024, 768),  # a reserve of 256
        (10_000, 4096, 3687),  # a reserve of a tenth, when that is more
        (10_000, 100, 1),  # a tiny limit still serves
    ],
)
def test_connection_cap_keeps_descriptors_for_the_rest_of_the_process(asked: int, limit: int | None, cap: int) -> None:
    assert connection_cap(asked, limit) == cap


@pytest.mark.parametrize("caps", [{"max_connections": 0}, {"max_connections_per_address": 0}])
async def test_a_cap_of_zero_is_refused(caps: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY, **caps)


async def test_one_address_never_holds_more_than_half_the_slots(connect: Connect) -> None:
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY, max_connections=4)
    try:
        assert server.max_connections_per_address == 2  # 1,000 asked, but one client must not take them all
        held = [await connect(server.port) for _ in range(2)]
        assert all([await served(stream) for stream in held])
        assert "too many open connections from 127.0.0.1" in await refused(await connect(server.port))
        assert await served(await connect(server.port, "127.0.0.2"))
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("peer", "counted_as"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # one subscriber's /64 is one client
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # an IPv4 client on a dual-stack socket
    ],
)
def test_the_per_address_cap_counts_ipv6_clients_by_their_64(peer: str, counted_as: str) -> None:
    assert client_address(peer) == counted_as
