"""The device port's lean HTTP/1.1 server, spoken to over raw sockets: keep-alive, pipelining, limits,
malformed input, idle connections. The handler echoes what it was given, so each test can see what the
server parsed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from tracker_jobs.admin import http1
from tracker_jobs.admin.http1 import Reply, Request, serve_http

MAX_BODY = 1024


async def echo(request: Request) -> Reply:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/slow":
        await asyncio.sleep(0.05)
    document = {"method": request.method, "path": request.path, "query": request.query,
                "type": request.content_type, "body": request.body.decode()}  # fmt: skip
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
    raw = b"".join(f"GET {path}?n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                   for n, path in enumerate(["/slow", "/", "/slow", "/"]))  # fmt: skip
    answers = await exchange(port, raw, replies=4)
    assert [orjson.loads(body)["query"] for _, _, body in answers] == ["n=0", "n=1", "n=2", "n=3"]


async def test_post_bodies_plain_and_chunked(port: int) -> None:
    form = b"id=d1&lat=1&lon=2"
    plain = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
             b"Content-Length: %d\r\n\r\n%s" % (len(form), form))  # fmt: skip
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
    ],
    ids=["declared-too-large", "chunked-too-large", "long-url", "many-headers", "tls-hello", "bad-length"],
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
    assert await asyncio.wait_for(reader.read(), 5) == b""
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


async def test_closing_the_server_answers_what_was_asked_first() -> None:
    server = await serve_http(echo, "127.0.0.1", 0, max_body_bytes=MAX_BODY)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.01)  # the request is being answered
    await server.close()
    status, _, _ = await asyncio.wait_for(read_reply(reader), 5)
    assert status == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
