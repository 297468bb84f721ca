"""The webhook channel: a signed JSON POST to the URL a user gave, through one shared client per worker.

- `sign(body, secret)`: `sha256=<hex>`, the HMAC-SHA256 of the exact bytes sent (X-Tracker-Signature).
- `check_webhook_url(value)`: an absolute http(s) URL with a host, at most 2048 characters (FieldError
  naming `attributes.webhookUrl` otherwise; the API answers 400).
- `webhook_client(...)`: the worker's shared aiohttp session. Unless private addresses are allowed
  (TRACKER_WEBHOOK_ALLOW_PRIVATE), no connection is ever made to a loopback, private, link-local,
  unspecified, multicast, reserved or otherwise non-public address. Two guards, both on the addresses
  the connection really uses, so a name that resolves to a public address when checked and to a private
  one when connecting (DNS rebinding) cannot get through:
    * the resolver wraps aiohttp's threaded (getaddrinfo) resolver and drops such addresses from what
      a name resolves to, failing when none is left (aiohttp's DNS cache only ever holds what is left);
    * aiohttp never resolves an IP literal in a URL (`http://127.0.0.1/`, `http://[::1]/`): the
      connector hands it straight to the socket. The connector's socket factory therefore checks
      every address right before its socket is created and connected, literal or resolved.
  Redirects are not followed and no cookies are kept (the session is shared by every user's webhooks).
- `post_signed(...)`: one try, classified as an `Attempt`; it never raises (but CancelledError).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from typing import Final

import aiohttp
import yarl
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from tracker_jobs.core.errors import FieldError
from tracker_jobs.notifications.attempt import SENT, Attempt

URL_FIELD: Final = "attributes.webhookUrl"
MAX_URL_LENGTH: Final = 2048
MAX_ERROR_LENGTH: Final = 500
USER_AGENT: Final = "tracker-jobs"
DELIVERY_HEADER: Final = "X-Tracker-Delivery"
SIGNATURE_HEADER: Final = "X-Tracker-Signature"
ALLOW_PRIVATE_VARIABLE: Final = "TRACKER_WEBHOOK_ALLOW_PRIVATE"

# Answers worth another try: the receiver is slow, busy or broken for now. Every other non-2xx
# (3xx included: redirects are not followed) will not change by trying again.
_TRANSIENT_STATUSES: Final = frozenset({408, 429})

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_PRIVATE_NETWORKS: Final[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("fc00::/7"),
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: IPv4 addresses inside IPv6


def sign(body: bytes, secret: str) -> str:
    """`sha256=` and the lower-case hex HMAC-SHA256 of the raw body under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_webhook_url(value: str) -> str:
    """The URL unchanged when it is an absolute http:// or https:// URL with a host, at most 2048
    characters long; a FieldError naming `attributes.webhookUrl` otherwise."""
    if not isinstance(value, str):
        raise FieldError(URL_FIELD, "must be text")
    if len(value) > MAX_URL_LENGTH:
        raise FieldError(URL_FIELD, f"must be at most {MAX_URL_LENGTH} characters")
    if any(char <= " " or char == "\x7f" for char in value):
        raise FieldError(URL_FIELD, "must not contain spaces or control characters")
    try:
        url = yarl.URL(value)
        port = url.port
    except ValueError as error:
        raise FieldError(URL_FIELD, f"is not a valid URL: {_bounded(str(error), 200)}") from None
    if url.scheme not in ("http", "https"):
        raise FieldError(URL_FIELD, "must be an http:// or https:// URL")
    if not url.is_absolute() or not url.raw_host:
        raise FieldError(URL_FIELD, "must be an absolute URL with a host")
    if not port:
        raise FieldError(URL_FIELD, "port must be from 1 to 65535")
    return value


class _RefusedAddress(OSError):
    """An address webhooks may not reach (an OSError: aiohttp's connector wraps those as connect errors)."""


def _refusal(address: str) -> str | None:
    """Why a webhook may not connect to this address (the whole message), or None when it may."""
    try:
        ip: _Address = ipaddress.ip_address(address)
    except ValueError:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 address with its zone
        except ValueError:
            return f"refused: {address!r} is not an IP address"
    # A NAT64 or 6to4 address leads to the IPv4 address inside it (NAT64's prefix is itself "reserved").
    inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    kind = _forbidden_kind(ip if inner is None else inner)
    if kind is None:
        return None
    article = "an" if kind[0] in "aeiou" else "a"
    return f"refused: {address} is {article} {kind} address; set {ALLOW_PRIVATE_VARIABLE} to allow"


def _forbidden_kind(ip: _Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _forbidden_kind(ip.ipv4_mapped)  # ::ffff:127.0.0.1 reaches 127.0.0.1
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if any(ip in network for network in _PRIVATE_NETWORKS):
        return "private"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:  # shared (100.64/10), documentation, benchmarking, ...
        return "non-public"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 or 6to4 address leads to."""
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


class _PublicOnlyResolver(AbstractResolver):
    """Resolves through another resolver and drops the addresses webhooks may not reach; fails (an
    OSError, as a failed lookup) when nothing is left."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [result for result in found if _refusal(result["host"]) is None]
        if not kept:
            refusal = _refusal(found[0]["host"]) if found else None
            raise _RefusedAddress(refusal or f"{host} resolved to no address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _public_socket(addr_info: AddrInfoType) -> socket.socket:
    """aiohttp's socket factory: refuses the address before its socket exists. It is the one place that
    sees IP literals of URLs, which aiohttp hands to the socket without asking the resolver."""
    family, kind, proto, _, address = addr_info
    refusal = _refusal(str(address[0]))
    if refusal is not None:
        raise _RefusedAddress(refusal)
    return socket.socket(family=family, type=kind, proto=proto)


def webhook_client(*, allow_private: bool, timeout_s: float, connections: int = 500) -> aiohttp.ClientSession:
    """The session every webhook of a worker process shares (made inside its running event loop, closed
    with it). Unless `allow_private`, it refuses every non-public address; each request ends after
    `timeout_s` in all (connecting included)."""
    if allow_private:
        connector = aiohttp.TCPConnector(limit=connections)
    else:
        # The threaded resolver (getaddrinfo, as the system resolves) is aiohttp's default without
        # aiodns; chosen here outright, it needs no closing (the connector closes only its own resolver).
        connector = aiohttp.TCPConnector(
            limit=connections,
            resolver=_PublicOnlyResolver(ThreadedResolver()),
            socket_factory=_public_socket,
        )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),  # one receiver's cookies never reach another's webhook
        trust_env=False,  # no proxy from the environment: the addresses checked are the ones connected to
    )


async def post_signed(
    client: aiohttp.ClientSession, url: str, body: bytes, *, secret: str | None, delivery_id: str
) -> Attempt:
    """POST the serialised JSON `body` to `url`, signed when a secret is set, and say what it came to:
    2xx sent; 408, 429 and 5xx worth another try; any other answer, a refused address or an invalid URL
    permanent; a timeout, a refused connection, a failed lookup or a broken answer worth another try.
    Only the status is read (not the body). Never raises, but CancelledError."""
    try:
        check_webhook_url(url)
    except FieldError as error:
        return Attempt(ok=False, permanent=True, error=_bounded(f"invalid URL: {error.problem}"))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        DELIVERY_HEADER: delivery_id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    try:
        async with client.post(url, data=body, headers=headers, allow_redirects=False) as response:
            status, reason = response.status, response.reason
    except Exception as error:  # anything at all is a failed try, never the job's crash
        return _failed(error, client.timeout.total)
    if 200 <= status < 300:
        return SENT
    transient = status in _TRANSIENT_STATUSES or 500 <= status < 600
    return Attempt(ok=False, permanent=not transient, error=_bounded(f"HTTP {status} {reason or ''}".rstrip()))


def _failed(error: Exception, timeout_s: float | None) -> Attempt:
    refused = _refused_in(error)
    if refused is not None:
        return Attempt(ok=False, permanent=True, error=_bounded(str(refused)))
    if isinstance(error, aiohttp.InvalidURL):  # e.g. 127.1: IPv4 in a form aiohttp will not connect to
        return Attempt(ok=False, permanent=True, error=_bounded(f"invalid URL: {error}"))
    if isinstance(error, TimeoutError):
        within = f" within {timeout_s:g} s" if timeout_s else ""
        return Attempt(ok=False, error=_bounded(f"no answer{within} ({type(error).__name__})"))
    return Attempt(ok=False, error=_bounded(f"{type(error).__name__}: {error}"))


def _refused_in(error: BaseException) -> _RefusedAddress | None:
    """The refusal behind an error aiohttp raised (it wraps the resolver's and the socket's OSErrors)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _RefusedAddress):
            return current
        seen.add(id(current))
        wrapped = getattr(current, "os_error", None)
        if isinstance(wrapped, _RefusedAddress):
            return wrapped
        current = current.__cause__ or current.__context__
    return None


def _bounded(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """One line (control characters gone), at most `limit` characters."""
    line = " ".join("".join(char if char.isprintable() else " " for char in text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
