"""What every view needs to know about its caller: the bearer token, who it is, whether they may, and
announcing a change of access to every process."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from tracker_jobs.api.keys import PRINCIPAL, REDIS
from tracker_jobs.core.access import publish_access_change
from tracker_jobs.core.errors import Forbidden
from tracker_jobs.core.principal import Principal

# Browsers cannot set headers on a websocket, so the socket also takes ?token=.
QUERY_TOKEN_PATHS = {"/api/socket"}


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.path in QUERY_TOKEN_PATHS and request.query.get("token", "").strip():
        return request.query["token"].strip()
    return None


def principal(request: web.Request) -> Principal:
    found: Principal = request[PRINCIPAL]
    return found


def require_admin(request: web.Request) -> Principal:
    caller = principal(request)
    if not caller.is_admin:
        raise Forbidden("this needs the admin role")
    return caller


async def announce_access_change(
    request: web.Request, *, users: Iterable[int] = (), devices: Iterable[int] = ()
) -> None:
    """After a commit that changed who may see or send what: every process hears it (this one too)."""
    await publish_access_change(request.app[REDIS], users=users, devices=devices)
