"""Real receivers for notifications in tests and benchmarks: a webhook endpoint (aiohttp on
127.0.0.1) that records each request and answers as told, and an SMTP server (aiosmtpd) whose inbox
the test reads."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tracker_jobs.core.config import Settings


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


@dataclass
class WebhookReceiver:
    """Answers `status` (2xx by default) after `delay_s`; every request is kept in `received`."""

    port: int = 0
    status: int = 200
    delay_s: float = 0.0
    received: list[Hook] = field(default_factory=list)
    answering: int = 0  # requests received and not yet answered (held for `delay_s`)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Hook(dict(request.headers), await request.read(), time.monotonic()))
        self.answering += 1
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return web.Response(status=self.status, text="ok")
        finally:
            self.answering -= 1

    async def wait_answering(self, timeout_s: float) -> bool:
        """Until a request is held here unanswered (a sender killed now leaves it in flight)."""
        deadline = time.monotonic() + timeout_s
        while not self.answering:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True


@asynccontextmanager
async def webhook_receiver(port: int = 0, **options: Any) -> AsyncIterator[WebhookReceiver]:
    """A receiver on 127.0.0.1 (a free port unless given: a test that stops and restarts one passes its port)."""
    receiver = WebhookReceiver(**options)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()


class Inbox:
    """An aiosmtpd handler keeping every message it accepts, and when (`arrived[i]` for `messages[i]`,
    time.monotonic() as `Hook.at`), for tests that tell a repeated message from the fault that caused it."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.arrived: list[float] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.arrived.append(time.monotonic())
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(port: int) -> Iterator[Inbox]:
    """A real SMTP server on 127.0.0.1:`port` for the block."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, server_hostname="mail.test")
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def to_receivers(settings: Settings, smtp_port: int, **more: Any) -> Settings:
    """The settings with mail to the test's SMTP server, webhooks to loopback allowed and answered
    within 2 s, and no digest window (unless `more` says otherwise)."""
    options: dict[str, Any] = {
        "smtp_url": f"smtp://127.0.0.1:{smtp_port}",
        "mail_from": "tracker@fleet.test",
        "webhook_allow_private": True,
        "webhook_timeout_s": 2.0,
        "mail_digest_s": 0,
        **more,
    }
    return replace(settings, **options)
