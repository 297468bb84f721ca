"""POST /api/session (log in with email and password), DELETE /api/session (log out)."""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web
from sqlmodel import col

from tracker_jobs.admin.auth import announce_access_change, bearer_token, principal
from tracker_jobs.admin.params import json_object
from tracker_jobs.admin.responses import json_response
from tracker_jobs.admin.state import SESSIONS
from tracker_jobs.core.db import transaction
from tracker_jobs.core.errors import FieldError, HttpError
from tracker_jobs.core.fields import parse_text
from tracker_jobs.users.models import UserSession
from tracker_jobs.users.service import MAX_PASSWORD, hash_token, login


async def create_session(request: web.Request) -> web.Response:
    body = await json_object(request)
    password = body.get("password")
    try:
        email = parse_text("email", body.get("email"), 256)
    except FieldError as error:
        raise FieldError(error.field, error.problem) from None
    if not isinstance(password, str) or not password:
        raise FieldError("password", "is required")
    if len(password) > MAX_PASSWORD:  # no stored password is longer; scrypt would read all of it
        raise HttpError(401, "unauthorized", "wrong email or password")
    async with transaction(request.app[SESSIONS]) as session:
        made = await login(session, email, password)
    if made is None:
        raise HttpError(401, "unauthorized", "wrong email or password")
    token, expires = made
    return json_response({"token": token, "expires": expires.isoformat()})


async def delete_session(request: web.Request) -> web.Response:
    token = bearer_token(request)
    assert token is not None  # the auth middleware let the request through
    async with transaction(request.app[SESSIONS]) as session:
        await session.execute(sa.delete(UserSession).where(col(UserSession.token_hash) == hash_token(token)))
    await announce_access_change(request, users=[principal(request).user_id])
    return web.Response(status=204)
