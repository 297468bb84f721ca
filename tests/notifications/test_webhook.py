"""The webhook channel against real receivers on this machine's loopback: the signature verified over the
exact bytes received, every kind of answer classified, slow and broken receivers, the refusal of
private addresses (no connection is made at all), the URL check, and the send_webhook job."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from arq import Retry

from tests.support.services import POSTGRES_URL, REDIS_URL, make_settings
from tracker_jobs.core.db import create_engine, session_factory
from tracker_jobs.core.errors import FieldError
from tracker_jobs.jobs.resources import WorkerResources
from tracker_jobs.notifications.attempt import SENT
from tracker_jobs.notifications.channels import DeliveryFailed
from tracker_jobs.notifications.jobs import WEBHOOK_CLIENT, send_webhook
from tracker_jobs.notifications.webhook import (
    _PublicOnlyResolver,
    check_webhook_url,
    post_signed,
    sign,
    webhook_client,
)

SECRET = "s3cret-of-the-rule"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An aiohttp app on 127.0.0.1: /status/{code} answers that status, /hang waits until released."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def status(self, request: web.Request) -> web.Response:
        self.requests.append(Received(dict(request.headers), await request.read()))
        return web.Response(status=int(request.match_info["code"]), text="answer body")

    async def hang(self, request: web.Request) -> web.Response:
        self.requests.append(Received(dict(request.headers), await request.read()))
        await asyncio.wait_for(self.release.wait(), 10)
        return web.Response(text="too late")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/status/{code}", found.status)
    app.router.add_post("/hang", found.hang)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = runner.addresses[0][1]
    try:
        yield found
    finally:
        found.release.set()
        await runner.cleanup()


@dataclass
class RawReceiver:
    """A plain TCP server on 127.0.0.1 that answers every connection with `answer` (or nothing) and
    closes it; it counts the connections it accepted."""

    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")  # the request's head
            await self.answer(reader, writer)
        finally:
            writer.close()


async def _started(raw: RawReceiver) -> asyncio.Server:
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    return server


async def _nothing(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    return None


@pytest.fixture
async def private_client() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that may reach loopback (the receivers of these tests)."""
    client = webhook_client(allow_private=True, timeout_s=2.0)
    yield client
    await client.close()


@pytest.fixture
async def public_client() -> AsyncIterator[aiohttp.ClientSession]:
    """A client as production runs it: public addresses only."""
    client = webhook_client(allow_private=False, timeout_s=2.0)
    yield client
    await client.close()


def test_the_signature_is_hmac_sha256_in_lower_case_hex() -> None:
    # RFC 4231, test case 2
    assert sign(b"what do ya want for nothing?", "Jefe") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


async def test_a_signed_delivery_verifies_over_the_raw_body_received(
    receiver: Receiver, private_client: aiohttp.ClientSession
) -> None:
    body = orjson.dumps({"event": {"type": "deviceOnline", "name": "Müller's van"}, "n": 1.5})
    attempt = await post_signed(
        private_client, receiver.url("/status/204"), body, secret=SECRET, delivery_id="delivery-42"
    )
    assert attempt == SENT
    [received] = receiver.requests
    assert received.body == body
    expected = "sha256=" + hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-Tracker-Signature"], expected)
    assert received.headers["X-Tracker-Delivery"] == "delivery-42"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["User-Agent"] == "tracker-jobs"


async def test_without_a_secret_nothing_is_signed(receiver: Receiver, private_client: aiohttp.ClientSession) -> None:
    attempt = await post_signed(private_client, receiver.url("/status/200"), b"{}", secret=None, delivery_id="d1")
    assert attempt == SENT
    [received] = receiver.requests
    assert "X-Tracker-Signature" not in received.headers
    assert received.headers["X-Tracker-Delivery"] == "d1"


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(500, False), (503, False), (429, False), (408, False), (400, True), (404, True), (410, True), (302, True)],
)
async def test_answers_are_classified(
    receiver: Receiver, private_client: aiohttp.ClientSession, status: int, permanent: bool
) -> None:
    attempt = await post_signed(private_client, receiver.url(f"/status/{status}"), b"{}", secret=None, delivery_id="d")
    assert not attempt.ok
    assert attempt.permanent is permanent
    assert attempt.error is not None
    assert attempt.error.startswith(f"HTTP {status} ")
    assert len(receiver.requests) == 1  # a redirect is not followed


async def test_a_receiver_slower_than_the_timeout_is_a_failure_worth_another_try(receiver: Receiver) -> None:
    client = webhook_client(allow_private=True, timeout_s=0.3)
    try:
        started = time.monotonic()
        attempt = await post_signed(client, receiver.url("/hang"), b"{}", secret=None, delivery_id="d")
        elapsed = time.monotonic() - started
    finally:
        await client.close()
    assert (attempt.ok, attempt.permanent) == (False, False)
    assert attempt.error is not None
    assert "no answer within 0.3 s" in attempt.error
    assert 0.25 <= elapsed < 1.5
    assert len(receiver.requests) == 1


async def _head_cut_short(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
    await writer.drain()


async def _garbage(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x00\x01 this is no HTTP \xff\r\n\r\n")
    await writer.drain()


@pytest.mark.parametrize("answer", [_nothing, _head_cut_short, _garbage], ids=["closed", "cut-short", "garbage"])
async def test_a_broken_answer_is_a_failure_worth_another_try(
    private_client: aiohttp.ClientSession,
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> None:
    raw = RawReceiver(answer)
    server = await _started(raw)
    try:
        attempt = await post_signed(
            private_client, f"http://127.0.0.1:{raw.port}/hook", b"{}", secret=None, delivery_id="d"
        )
    finally:
        server.close()
        await server.wait_closed()
    assert (attempt.ok, attempt.permanent) == (False, False)
    assert attempt.error
    assert len(attempt.error) <= 500
    assert raw.connections == 1


async def test_a_port_nobody_listens_on_is_a_failure_worth_another_try(private_client: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed
    attempt = await post_signed(private_client, f"http://127.0.0.1:{port}/", b"{}", secret=None, delivery_id="d")
    assert (attempt.ok, attempt.permanent) == (False, False)
    assert attempt.error


async def test_a_name_that_does_not_resolve_is_a_failure_worth_another_try(
    public_client: aiohttp.ClientSession,
) -> None:
    attempt = await post_signed(public_client, "http://no-such-host.invalid/", b"{}", secret=None, delivery_id="d")
    assert (attempt.ok, attempt.permanent) == (False, False)
    assert attempt.error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_loopback_is_refused_before_any_connection(public_client: aiohttp.ClientSession, host: str) -> None:
    raw = RawReceiver(_nothing)
    server = await _started(raw)
    try:
        attempt = await post_signed(public_client, f"http://{host}:{raw.port}/hook", b"{}", secret="x", delivery_id="d")
    finally:
        server.close()
        await server.wait_closed()
    assert (attempt.ok, attempt.permanent) == (False, True)
    assert attempt.error is not None
    assert attempt.error.startswith("refused: ")
    assert "is a loopback address; set TRACKER_WEBHOOK_ALLOW_PRIVATE to allow" in attempt.error
    assert raw.connections == 0


async def test_the_message_names_the_literal_refused(public_client: aiohttp.ClientSession) -> None:
    attempt = await post_signed(public_client, "http://127.0.0.1:9/", b"{}", secret=None, delivery_id="d")
    assert attempt.error == "refused: 127.0.0.1 is a loopback address; set TRACKER_WEBHOOK_ALLOW_PRIVATE to allow"


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("10.1.2.3", "a private"),
        ("172.16.0.1", "a private"),
        ("192.168.1.1", "a private"),
        ("[fd00::1]", "a private"),
        ("169.254.169.254", "a link-local"),
        ("[fe80::1]", "a link-local"),
        ("0.0.0.0", "an unspecified"),
        ("[::]", "an unspecified"),
        ("224.0.0.1", "a multicast"),
        ("240.0.0.1", "a reserved"),
        ("100.64.0.1", "a non-public"),
        ("[::1]", "a loopback"),
        ("[64:ff9b::a00:1]", "a private"),  # NAT64 of 10.0.0.1
        ("[2002:7f00:1::1]", "a loopback"),  # 6to4 of 127.0.0.1
    ],
)
async def test_literal_private_addresses_are_refused_without_a_connection(
    public_client: aiohttp.ClientSession, host: str, kind: str
) -> None:
    started = time.monotonic()
    attempt = await post_signed(public_client, f"http://{host}:9/", b"{}", secret=None, delivery_id="d")
    assert (attempt.ok, attempt.permanent) == (False, True)
    assert attempt.error is not None
    assert f"is {kind} address" in attempt.error
    assert time.monotonic() - started < 0.5  # refused at once, no connect attempted


async def test_an_ipv4_address_in_a_legacy_form_is_refused(public_client: aiohttp.ClientSession) -> None:
    for url in ["http://127.1:9/", "http://2130706433:9/"]:
        attempt = await post_signed(public_client, url, b"{}", secret=None, delivery_id="d")
        assert (attempt.ok, attempt.permanent) == (False, True), url


async def test_with_private_allowed_loopback_goes_through(
    receiver: Receiver, private_client: aiohttp.ClientSession
) -> None:
    for host in ["127.0.0.1", "localhost"]:
        attempt = await post_signed(
            private_client, receiver.url("/status/200", host), b"{}", secret=None, delivery_id=host
        )
        assert attempt == SENT
    assert [received.headers["X-Tracker-Delivery"] for received in receiver.requests] == ["127.0.0.1", "localhost"]


class _Fixed(AbstractResolver):
    """A name server that answers every name with the same addresses (DNS rebinding's second answer)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_the_resolver_drops_private_answers_and_fails_when_none_is_left() -> None:
    mixed = _PublicOnlyResolver(_Fixed("10.0.0.7", "93.184.216.34", "::1", "2606:2800:220:1::1"))
    kept = await mixed.resolve("hooks.example.com", 443, socket.AF_UNSPEC)
    assert [result["host"] for result in kept] == ["93.184.216.34", "2606:2800:220:1::1"]
    with pytest.raises(OSError, match=r"^refused: 192\.168\.0\.9 is a private address"):
        await _PublicOnlyResolver(_Fixed("192.168.0.9", "127.0.0.1")).resolve("rebound.example.com", 80)


@pytest.mark.parametrize(
    "value",
    [
        "ftp://x",
        "http://",
        "not a url",
        "/relative/path",
        "http:///path",
        "https://exa mple.com/",
        "http://x:0/",
        "http://x:99999/",
        "https://example.com/" + "a" * 2030,
    ],
)
def test_urls_that_are_not_absolute_http_are_refused_naming_the_field(value: str) -> None:
    with pytest.raises(FieldError) as refused:
        check_webhook_url(value)
    assert refused.value.field == "attributes.webhookUrl"


def test_good_urls_are_returned_unchanged() -> None:
    for value in [
        "https://hooks.example.com/tracker?token=abc",
        "http://10.0.0.5:8080/in",
        "HTTPS://Example.COM",
        "https://[2001:db8::1]/x",
    ]:
        assert check_webhook_url(value) == value
    longest = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    assert check_webhook_url(longest) == longest


async def test_an_invalid_url_is_a_permanent_failure(public_client: aiohttp.ClientSession) -> None:
    attempt = await post_signed(public_client, "ftp://files.example.com/", b"{}", secret=None, delivery_id="d")
    assert (attempt.ok, attempt.permanent) == (False, True)
    assert attempt.error is not None
    assert attempt.error.startswith("invalid URL: ")


@pytest.fixture
async def job_ctx(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """What a worker hands the job: its resources, with private addresses allowed (the receiver is local)."""
    settings = make_settings(POSTGRES_URL, REDIS_URL, TRACKER_WEBHOOK_ALLOW_PRIVATE="1", TRACKER_WEBHOOK_TIMEOUT="2")
    engine = create_engine(f"sqlite:///{tmp_path / 'unused.db'}")  # never connected to
    shared = WorkerResources(settings, engine, session_factory(engine), consumer="test")
    yield {"resources": shared}
    client = shared.caches.get(WEBHOOK_CLIENT)
    if client is not None:
        await client.close()
    await engine.dispose()


async def test_the_job_delivers_retries_and_gives_up(receiver: Receiver, job_ctx: dict[str, Any]) -> None:
    payload = {"event": {"type": "alarm"}, "device": {"id": 7}}
    sent = await send_webhook(job_ctx, url=receiver.url("/status/202"), payload=payload)
    assert sent == {"url": receiver.url("/status/202"), "status": "sent"}
    assert receiver.requests[0].body == orjson.dumps(payload)
    assert "X-Tracker-Signature" not in receiver.requests[0].headers

    with pytest.raises(Retry) as retried:  # DeliveryFailed, turned into arq's retry by the job base
        await send_webhook(job_ctx, url=receiver.url("/status/503"), payload=payload)
    assert isinstance(retried.value.__cause__, DeliveryFailed)

    dead = await send_webhook(job_ctx, url=receiver.url("/status/410"), payload=payload)
    assert dead == {"url": receiver.url("/status/410"), "status": "dead", "error": "HTTP 410 Gone"}
    assert len(receiver.requests) == 3


async def test_the_job_refuses_private_addresses_by_default(receiver: Receiver, tmp_path: Path) -> None:
    settings = make_settings(POSTGRES_URL, REDIS_URL)
    assert settings.webhook_allow_private is False
    engine = create_engine(f"sqlite:///{tmp_path / 'unused.db'}")
    shared = WorkerResources(settings, engine, session_factory(engine), consumer="test")
    try:
        dead = await send_webhook({"resources": shared}, url=receiver.url("/status/200"), payload={})
    finally:
        await shared.caches[WEBHOOK_CLIENT].close()
        await engine.dispose()
    assert dead["status"] == "dead"
    assert "loopback" in dead["error"]
    assert receiver.requests == []
