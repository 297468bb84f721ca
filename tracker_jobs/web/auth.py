"""Who is calling, and how often: bearer tokens for everything under /api/, the rate limits, the role
check, and announcing access changes to every process.

Rate limits: a request with a valid token counts against that token; every other request (no token,
an unknown or expired token, a public route such as login) counts against the client's address, so
guessing with `Authorization: Bearer junk` is limited like guessing passwords. Once an address has
spent its budget, tokens from it that were not used this window are no longer looked up until the
window ends (guessing costs no database work); tokens already in use this window go on working, so
one guesser behind a shared address (a NAT, a proxy) does not lock out its neighbours' sessions.
"""

from __future__ import annotations

from aiohttp import web

from tracker_jobs.api.access import bearer_token
from tracker_jobs.api.errors import Handler
from tracker_jobs.api.keys import PRINCIPAL, REDIS, SESSIONS, SETTINGS
from tracker_jobs.api.ratelimit import over_limit, seconds_to_wait
from tracker_jobs.core.errors import (
    TooManyRequests,
    Unauthorized,
)
from tracker_jobs.users.service import hash_token, principal_for_token_hash

PUBLIC = {("POST", "/api/session"), ("GET", "/api/openapi.json")}


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    settings, redis = request.app[SETTINGS], request.app[REDIS]
    window_s = settings.rate_limit_window_s
    address_key, address_limit = f"tracker:rate:address:{request.remote}", settings.anonymous_rate_limit
    token = bearer_token(request)
    if token is None or (request.method, request.path) in PUBLIC:
        if (wait_s := await seconds_to_wait(redis, address_key, address_limit, window_s)) is not None:
            raise TooManyRequests(wait_s, "from this address")
        if (request.method, request.path) in PUBLIC:
            return await handler(request)
        raise Unauthorized("an Authorization: Bearer <token> header is required")
    token_hash = hash_token(token)
    token_key = f"tracker:rate:token:{token_hash}"
    if (wait_s := await over_limit(redis, address_key, address_limit, unless_exists=token_key)) is not None:
        raise TooManyRequests(wait_s, "from this address")
    async with request.app[SESSIONS]() as session:
        principal = await principal_for_token_hash(session, token_hash)
    if principal is None:
        if (wait_s := await seconds_to_wait(redis, address_key, address_limit, window_s)) is not None:
            raise TooManyRequests(wait_s, "from this address")
        raise Unauthorized("the token is unknown or expired")
    # Counted even with the limit off (0): the count is what spares this token at a guessed-out address.
    token_limit = settings.api_rate_limit or 2**62
    if (wait_s := await seconds_to_wait(redis, token_key, token_limit, window_s)) is not None:
        raise TooManyRequests(wait_s, "for this token")
    request[PRINCIPAL] = principal
    return await handler(request)
