"""The mail channel: where the SMTP server is (`TRACKER_SMTP_URL`), a notification as a MIME message, and
one try at handing it over.

- `smtp://[user:pass@]host[:port]` (port 25): plain, upgraded with STARTTLS when the server offers it
  (aiosmtplib's `start_tls=None`); the login, if any, follows the upgrade. A server that offers no
  STARTTLS gets the login in the clear: use smtps:// or a server that offers it when that matters.
- `smtps://[user:pass@]host[:port]` (port 465): TLS from the first byte.

`send_message` never raises (but for cancellation): it answers an `Attempt`, permanent when another try
cannot help (a 5xx reply, a malformed address), not permanent when it may (no connection, a timeout, a
dropped connection, a 4xx reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Literal
from urllib.parse import unquote, urlsplit

import aiosmtplib

from tracker_jobs.notifications.attempt import SENT, Attempt

TlsMode = Literal["starttls-if-offered", "implicit"]
_DEFAULT_PORTS: dict[str, tuple[int, TlsMode]] = {
    "smtp": (25, "starttls-if-offered"),
    "smtps": (465, "implicit"),
}
ERROR_LIMIT = 500  # characters of an error kept for the delivery log
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    tls: TlsMode


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://[user:pass@]host[:port]` or `smtps://...`, user and password percent-decoded.

    Raises ValueError naming what is wrong (the password is never part of the message)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise ValueError(f"SMTP URL: {error} (expected smtp://[user:pass@]host[:port] or smtps://...)") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(
            f"SMTP URL: expected the scheme smtp:// or smtps://, got {parts.scheme + ':' if parts.scheme else 'none'}"
        )
    if not parts.hostname:
        raise ValueError("SMTP URL: no host (expected smtp://[user:pass@]host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("SMTP URL: expected no path, query or fragment after host[:port]")
    default_port, tls = _DEFAULT_PORTS[scheme]
    if port == 0:
        raise ValueError("SMTP URL: port 0 is not a port to connect to")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None and username is not None else None
    return SmtpTarget(
        host=parts.hostname,
        port=default_port if port is None else port,
        username=username,
        password=password,
        tls=tls,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_message(*, sender: str, to: str, subject: str, text: str, html: str, message_id: str) -> EmailMessage:
    """A multipart/alternative message (text, then HTML), `Message-ID: <{message_id}@tracker-jobs>`.

    `message_id` is the delivery's stable id ("d123", "d123-d124"): a retried delivery keeps its
    Message-ID, so receivers may drop a duplicate. The subject is made one line. Raises ValueError
    (a permanent failure for the delivery) for a `message_id` that is not letters, digits, dots, dashes
    and underscores, or an address the header parser cannot take (a line break in it: header injection,
    or one such as "ann@"); other malformed addresses come back from `send_message` as permanent."""
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"message_id: expected letters, digits, '.', '-' or '_', got {message_id!r}")
    message = EmailMessage()
    message["Subject"] = _one_line(subject)
    for header, address in (("From", sender), ("To", to)):
        try:
            message[header] = address
        except ValueError:
            raise
        except Exception as error:  # the email package's parser fails on some input ("ann@": IndexError)
            raise ValueError(f"{header}: malformed address {address!r}") from error
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<{message_id}@tracker-jobs>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def _bounded(text: str) -> str:
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "…"


def _reply(code: int, message: str) -> str:
    return f"{code} {_one_line(message)}"


def _classify(error: Exception) -> Attempt:
    """What a failed try means for the next one."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        # Every recipient refused: permanent only when each refusal was (a 4xx is "not now").
        codes = [refused.code for refused in error.recipients]
        detail = "; ".join(
            f"{refused.recipient}: {_reply(refused.code, refused.message)}" for refused in error.recipients
        )
        permanent = bool(codes) and all(500 <= code < 600 for code in codes)
        return Attempt(ok=False, permanent=permanent, error=_bounded(f"recipient refused: {detail}"))
    if isinstance(error, aiosmtplib.SMTPResponseException):
        # 5xx: refused for good (a refused sender, 535 bad credentials, 554 message rejected); 4xx: not now.
        # A connection answered without a code (-1) is a dropped connection: not permanent.
        what = type(error).__name__.removeprefix("SMTP")
        return Attempt(
            ok=False, permanent=500 <= error.code < 600, error=_bounded(f"{what}: {_reply(error.code, error.message)}")
        )
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        # An address needing SMTPUTF8 at a server without it: no later try changes that.
        return Attempt(ok=False, permanent=True, error=_bounded(f"not supported: {error.message}"))
    if isinstance(error, ValueError) and not isinstance(error, OSError):
        # aiosmtplib's address checks (an address it cannot put on a command line, no usable To/From);
        # not a certificate that failed to verify (ssl.SSLCertVerificationError is a ValueError too).
        return Attempt(ok=False, permanent=True, error=_bounded(f"malformed address: {error}"))
    if isinstance(error, TimeoutError):
        return Attempt(ok=False, error=_bounded(f"timed out: {error}" if str(error) else "timed out"))
    # Refused or dropped connections, TLS handshakes that failed, anything else: worth another try.
    text = error.message if isinstance(error, aiosmtplib.SMTPException) else str(error)
    return Attempt(ok=False, error=_bounded(f"{type(error).__name__}: {_one_line(text)}"))


async def send_message(
    target: SmtpTarget, message: EmailMessage, *, timeout_s: float = 30, tls_context: ssl.SSLContext | None = None
) -> Attempt:
    """One try at handing `message` to the server (envelope from its From and To headers).

    `timeout_s` bounds the whole try, connection to the server's acceptance of the message, and each
    command within it. `tls_context` replaces the default one (system CAs, host name checked), for a
    private CA. Never raises but CancelledError."""
    client: aiosmtplib.SMTP | None = None
    try:
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=(target.password or "") if target.username is not None else None,
            use_tls=target.tls == "implicit",
            start_tls=None if target.tls == "starttls-if-offered" else False,
            timeout=timeout_s,
            tls_context=tls_context,
        )
        async with asyncio.timeout(timeout_s):
            await client.connect()
            await client.send_message(message)
    except Exception as error:
        if client is not None:
            client.close()
        return _classify(error)
    # The server has the message: a QUIT that fails changes nothing (a retry would send it twice).
    try:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(min(timeout_s, 5.0)):
                await client.quit()
    finally:
        client.close()
    return SENT
