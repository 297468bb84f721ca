"""Bearer-token authentication for everything under /api/, and the role check."""

from __future__ import annotations

from aiohttp import web

from tracker_jobs.admin.errors import ApiError, Handler
from tracker_jobs.admin.state import PRINCIPAL, SESSIONS
from tracker_jobs.users.service import Principal, principal_for_token

PUBLIC = {("POST", "/api/session"), ("GET", "/api/openapi.json")}


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


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/") or (request.method, request.path) in PUBLIC:
        return await handler(request)
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "an Authorization: Bearer <token> header is required",
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    async with request.app[SESSIONS]() as session:
        principal = await principal_for_token(session, token)
    if principal is None:
        raise ApiError(401, "unauthorized", "the token is unknown or expired", headers={"WWW-Authenticate": "Bearer"})
    request[PRINCIPAL] = principal
    return await handler(request)


def principal(request: web.Request) -> Principal:
    found: Principal = request[PRINCIPAL]
    return found


def require_admin(request: web.Request) -> Principal:
    caller = principal(request)
    if not caller.is_admin:
        raise ApiError(403, "forbidden", "this needs the admin role")
    return caller
