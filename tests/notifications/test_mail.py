"""The mail channel against real SMTP servers on 127.0.0.1 (aiosmtpd, each in its own thread): what arrives,
STARTTLS and SMTPS, logins, and how each kind of failure is classified."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tracker_jobs.embedded import free_port
from tracker_jobs.notifications.attempt import SENT
from tracker_jobs.notifications.mail import SmtpTarget, build_message, parse_smtp_url, send_message
from tracker_jobs.notifications.messages import render

SENDER = "Fleet tracker <tracker@fleet.test>"
USER = "fleet@relay.test"
PASSWORD = "p@ss:w/rd %"
# user and password percent-encoded, as TRACKER_SMTP_URL carries them
CREDENTIALS = "fleet%40relay.test:p%40ss%3Aw%2Frd%20%25"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    over_tls: bool
    authenticated: bool


class Inbox:
    """An aiosmtpd handler keeping what it accepts; some recipients and subjects are refused on purpose."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        if address.startswith("later@"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if "spam" in str(message["Subject"]):
            return "554 5.7.1 rejected as spam"
        assert envelope.mail_from is not None
        self.received.append(
            Received(
                envelope.mail_from, list(envelope.rcpt_tos), message, session.ssl is not None, session.authenticated
            )
        )
        return "250 Message accepted for delivery"


def check_login(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    good = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=good, handled=False)


@contextmanager
def smtp_server(**options: Any) -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on a free port of 127.0.0.1 for the block, with aiosmtpd's `options`."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, server_hostname="mail.test", **options)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def message(to: str = "ann@fleet.test", subject: str = "Truck 7 entered Depot", delivery: str = "d42") -> EmailMessage:
    return build_message(
        sender=SENDER, to=to, subject=subject, text="Truck 7 entered Depot.", html="<p>Truck 7</p>", message_id=delivery
    )


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made with the openssl program (part of the machine's image)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    openssl = shutil.which("openssl")
    assert openssl is not None, "the TLS tests need the openssl program to make their certificate"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    files = ["-keyout", str(key), "-out", str(cert), "-days", "1"]
    subprocess.run([openssl, "req", "-x509", *curve, *files, *subject], check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting the server's self-signed certificate)."""
    cert, key = self_signed_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


# --- parsing the URL and building the message ---------------------------------------------------------------


def test_smtp_urls_parse_with_default_ports_and_decoded_credentials() -> None:
    assert parse_smtp_url("smtp://mail.example.com") == SmtpTarget(
        "mail.example.com", 25, None, None, "starttls-if-offered"
    )
    assert parse_smtp_url(f"smtps://{CREDENTIALS}@Mail.Example.com") == SmtpTarget(
        "mail.example.com", 465, USER, PASSWORD, "implicit"
    )
    assert parse_smtp_url("smtp://relay:2525") == SmtpTarget("relay", 2525, None, None, "starttls-if-offered")
    assert parse_smtp_url("smtps://[::1]:8465/") == SmtpTarget("::1", 8465, None, None, "implicit")
    assert parse_smtp_url("smtp://user@relay").username == "user"
    # The password is never shown.
    assert PASSWORD not in repr(parse_smtp_url(f"smtp://{CREDENTIALS}@relay"))


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://mail.example.com", "scheme"),
        ("mail.example.com:25", "scheme"),
        ("smtp://", "no host"),
        ("smtp://user:pw@:25", "no host"),
        ("smtp://relay:99999", "out of range"),
        ("smtp://relay:port", "Port"),
        ("smtp://relay:0", "port 0"),
        ("smtp://relay/inbox", "no path"),
        ("smtp://relay?tls=1", "no path"),
    ],
)
def test_bad_smtp_urls_are_refused_with_a_clear_message(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="SMTP URL") as raised:
        parse_smtp_url(url)
    assert complaint in str(raised.value)


def test_the_message_has_both_parts_a_stable_message_id_and_a_date() -> None:
    built = build_message(
        sender=SENDER,
        to="ann@fleet.test",
        subject="two\nlines",
        text="plain ü",
        html="<p>html ü</p>",
        message_id="d1-d2",
    )
    assert built["Message-ID"] == "<d1-d2@tracker-jobs>"
    assert built["Subject"] == "two lines"
    assert built["Date"] is not None
    assert built.get_content_type() == "multipart/alternative"
    text_part, html_part = built.iter_parts()
    assert (text_part.get_content_type(), html_part.get_content_type()) == ("text/plain", "text/html")
    assert text_part.get_content().strip() == "plain ü"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="message_id"):
        message(delivery="d1@elsewhere")
    with pytest.raises(ValueError, match="linefeed"):  # no header injection through an address
        message(to="ann@fleet.test\nBcc: eve@evil.test")
    with pytest.raises(ValueError, match="To: malformed address"):  # the email package's parser gives up
        message(to="ann@")


# --- delivery ---------------------------------------------------------------------------------------------------


async def test_a_rendered_notification_arrives_whole() -> None:
    item = {
        "type": "geofenceEnter",
        "eventTime": datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
        "device": {"id": 7, "name": "<b>x</b> Truck 7", "uniqueId": "860000000000007"},
        "position": {"latitude": 52.520008, "longitude": 13.404954, "speed": 0.0},
        "geofence": {"id": 3, "name": "Depot"},
        "maintenance": None,
        "attributes": {},
    }
    subject, text, html = render([item], timezone="Europe/Berlin", public_url="https://fleet.test")
    built = build_message(
        sender=SENDER, to="Ann <ann@fleet.test>", subject=subject, text=text, html=html, message_id="d123"
    )
    with smtp_server() as (inbox, port):
        attempt = await send_message(parse_smtp_url(f"smtp://127.0.0.1:{port}"), built, timeout_s=5)
        assert attempt == SENT
        [received] = inbox.received
    assert received.mail_from == "tracker@fleet.test"
    assert received.rcpt_tos == ["ann@fleet.test"]
    got = received.message
    assert got["Subject"] == "<b>x</b> Truck 7 entered Depot"
    assert got["From"] == SENDER
    assert got["To"] == "Ann <ann@fleet.test>"
    assert got["Message-ID"] == "<d123@tracker-jobs>"
    assert got["Date"] is not None
    assert not received.over_tls  # the server offered no STARTTLS: plain it is
    plain = got.get_body(preferencelist=("plain",))
    rich = got.get_body(preferencelist=("html",))
    assert plain is not None
    assert rich is not None
    plain_text, html_text = plain.get_content(), rich.get_content()  # type: ignore[attr-defined]
    assert "<b>x</b> Truck 7 entered the geofence Depot." in plain_text
    assert "13:00:00 CET" in plain_text
    assert "&lt;b&gt;x&lt;/b&gt; Truck 7" in html_text
    assert "<b>x</b>" not in html_text
    assert 'href="https://fleet.test/?deviceId=7"' in html_text


async def test_smtp_is_upgraded_with_starttls_when_the_server_offers_it(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls_pair
    # The server refuses mail before STARTTLS, and offers AUTH only after it (auth_require_tls).
    with smtp_server(tls_context=server_context, require_starttls=True, authenticator=check_login) as (inbox, port):
        target = parse_smtp_url(f"smtp://{CREDENTIALS}@127.0.0.1:{port}")
        attempt = await send_message(target, message(), timeout_s=5, tls_context=client_context)
        assert attempt == SENT
        [received] = inbox.received
        assert received.over_tls
        assert received.authenticated

        # The certificate is checked: the system's CAs do not know this one.
        failed = await send_message(parse_smtp_url(f"smtp://127.0.0.1:{port}"), message(), timeout_s=5)
        assert not failed.ok
        assert not failed.permanent
        assert failed.error is not None
        assert "certificate" in failed.error.lower()
        assert len(inbox.received) == 1


async def test_smtps_speaks_tls_from_the_first_byte(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls_pair
    with smtp_server(ssl_context=server_context, authenticator=check_login, auth_require_tls=False) as (inbox, port):
        target = parse_smtp_url(f"smtps://{CREDENTIALS}@127.0.0.1:{port}")
        assert await send_message(target, message(), timeout_s=5, tls_context=client_context) == SENT
        [received] = inbox.received
        assert received.authenticated
        assert received.message["Message-ID"] == "<d42@tracker-jobs>"


async def test_a_login_with_the_url_credentials_and_a_wrong_password_is_permanent() -> None:
    with smtp_server(authenticator=check_login, auth_require_tls=False) as (inbox, port):
        assert (
            await send_message(parse_smtp_url(f"smtp://{CREDENTIALS}@127.0.0.1:{port}"), message(), timeout_s=5) == SENT
        )
        assert [received.authenticated for received in inbox.received] == [True]

        wrong = await send_message(parse_smtp_url(f"smtp://{USER}:wrong@127.0.0.1:{port}"), message(), timeout_s=5)
        assert not wrong.ok
        assert wrong.permanent
        assert wrong.error is not None
        assert "535" in wrong.error
        assert len(inbox.received) == 1


async def test_a_server_that_is_down_is_worth_another_try_and_answers_quickly() -> None:
    target = parse_smtp_url(f"smtp://127.0.0.1:{free_port()}")
    started = time.monotonic()
    attempt = await send_message(target, message(), timeout_s=5)
    assert time.monotonic() - started < 2
    assert not attempt.ok
    assert not attempt.permanent
    assert attempt.error


async def test_a_server_that_never_greets_times_out_and_is_worth_another_try() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = parse_smtp_url(f"smtp://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        attempt = await send_message(target, message(), timeout_s=0.5)
        assert time.monotonic() - started < 2
    assert not attempt.ok
    assert not attempt.permanent
    assert attempt.error is not None
    assert "timed out" in attempt.error.lower()


@asynccontextmanager
async def hanging_up_server() -> AsyncIterator[int]:
    """Greets, reads one command, hangs up."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mail.test ESMTP\r\n")
        await writer.drain()
        await reader.readline()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_dropped_connection_is_worth_another_try() -> None:
    async with hanging_up_server() as port:
        attempt = await send_message(parse_smtp_url(f"smtp://127.0.0.1:{port}"), message(), timeout_s=5)
    assert not attempt.ok
    assert not attempt.permanent
    assert attempt.error


async def test_refusals_are_permanent_for_5xx_and_not_for_4xx() -> None:
    with smtp_server() as (inbox, port):
        target = parse_smtp_url(f"smtp://127.0.0.1:{port}")

        unknown = await send_message(target, message(to="nobody@fleet.test"), timeout_s=5)
        assert (unknown.ok, unknown.permanent) == (False, True)
        assert unknown.error is not None
        assert "550" in unknown.error
        assert "no such user" in unknown.error

        busy = await send_message(target, message(to="later@fleet.test"), timeout_s=5)
        assert (busy.ok, busy.permanent) == (False, False)
        assert busy.error is not None
        assert "451" in busy.error

        rejected = await send_message(target, message(subject="cheap spam"), timeout_s=5)
        assert (rejected.ok, rejected.permanent) == (False, True)
        assert rejected.error is not None
        assert "554" in rejected.error

        assert inbox.received == []
        # The connection is usable after each refusal: a good message still arrives.
        assert await send_message(target, message(), timeout_s=5) == SENT
        assert len(inbox.received) == 1


@pytest.mark.parametrize("to", ["not an address", "<>", "ann@@fleet.test", ""])
async def test_a_malformed_recipient_is_permanent(to: str) -> None:
    with smtp_server() as (inbox, port):
        attempt = await send_message(parse_smtp_url(f"smtp://127.0.0.1:{port}"), message(to=to), timeout_s=5)
        assert (attempt.ok, attempt.permanent) == (False, True), attempt
        assert inbox.received == []


async def test_error_text_is_bounded() -> None:
    with smtp_server() as (_, port):
        long_address = "nobody@" + "x" * 2000 + ".test"
        attempt = await send_message(parse_smtp_url(f"smtp://127.0.0.1:{port}"), message(to=long_address), timeout_s=5)
    assert not attempt.ok
    assert attempt.error is not None
    assert len(attempt.error) <= 500
