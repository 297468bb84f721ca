"""/api/users (admins only): users with roles admin and user, and each user's long-lived API tokens.

Passwords are stored only as scrypt hashes and tokens only as SHA-256; a new token is shown once.
The last enabled admin cannot be deleted, disabled or demoted, and a request cannot delete its own token.
"""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web
from sqlmodel import col

from tracker_jobs.api.access import announce_access_change, bearer_token, principal, require_admin
from tracker_jobs.api.bodies import read_body
from tracker_jobs.api.keys import SESSIONS
from tracker_jobs.api.openapi import (
    ANY_OBJECT,
    BOOLEAN,
    ID,
    INTEGER,
    STRING,
    TIME,
    Operation,
    Reply,
    array,
    describe,
    documented,
    error_reply,
    nullable,
    obj,
)
from tracker_jobs.api.params import path_id
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.core.db import transaction
from tracker_jobs.core.errors import HttpError, not_found
from tracker_jobs.core.principal import Role
from tracker_jobs.users import service
from tracker_jobs.users.models import UserSession
from tracker_jobs.users.schemas import Credentials, NewToken, NewUser, UserChanges
from tracker_jobs.users.service import MAX_PASSWORD, hash_token, login

USER = obj(
    {
        "id": INTEGER,
        "name": STRING,
        "email": STRING,
        "role": {"type": "string", "enum": list(Role)},
        "disabled": BOOLEAN,
        "limitCommands": BOOLEAN,
        "attributes": ANY_OBJECT,
        "createdAt": TIME,
    }
)
TOKEN = obj({"id": INTEGER, "userId": INTEGER, "name": STRING, "createdAt": TIME, "lastUsedAt": nullable(TIME)})
NEW_TOKEN = {**TOKEN, "properties": {**TOKEN["properties"], "token": STRING}, "required": [*TOKEN["required"], "token"]}
USER_PATH = {"id": ID}
TOKEN_PATH = {"id": ID, "token_id": ID}
TAKEN = error_reply("the email belongs to another user")
LAST_ADMIN = error_reply("the change would leave no enabled admin, or delete the token this request uses")


@documented(Operation("Every user", {200: Reply("users", array(USER))}, auth="admin", tag="users"))
async def list_users(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[SESSIONS]() as session:
        return json_response([service.user_to_api(user) for user in await service.list_users(session)])


@documented(
    Operation(
        "Create a user (role defaults to user)",
        {201: Reply("the user", USER), 409: TAKEN},
        auth="admin",
        body=NewUser,
        example={
            "name": "Dispatcher",
            "email": "walk-dispatcher@example.com",
            "password": "a long passphrase",
            "role": "user",
        },
        tag="users",
    )
)
async def create_user(request: web.Request) -> web.Response:
    require_admin(request)
    fields = (await read_body(request, NewUser)).given()
    async with transaction(request.app[SESSIONS]) as session:
        if await service.email_taken(session, fields["email"]):
            raise HttpError(409, "conflict", f"email: {fields['email']!r} belongs to another user")
        user = await service.create_user(session, fields)
    return json_response(service.user_to_api(user), status=201)


@documented(Operation("One user", {200: Reply("the user", USER)}, auth="admin", path=USER_PATH, tag="users"))
async def get_user(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = path_id(request)
    async with request.app[SESSIONS]() as session:
        user = await service.get_user(session, user_id)
    if user is None:
        raise not_found(f"user {user_id}")
    return json_response(service.user_to_api(user))


@documented(
    Operation(
        "Change some of a user's fields; a new password ends their login sessions",
        {200: Reply("the user", USER), 409: TAKEN},
        auth="admin",
        path=USER_PATH,
        body=UserChanges,
        example={"name": "Dispatcher two"},
        tag="users",
    )
)
async def update_user(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = path_id(request)
    fields = (await read_body(request, UserChanges)).given()
    async with transaction(request.app[SESSIONS]) as session:
        user = await service.get_user(session, user_id)
        if user is None:
            raise not_found(f"user {user_id}")
        if "email" in fields and await service.email_taken(session, fields["email"], except_id=user_id):
            raise HttpError(409, "conflict", f"email: {fields['email']!r} belongs to another user")
        changes_access = "password" in fields or any(
            getattr(user, key) != fields[key] for key in ("role", "disabled") if key in fields
        )
        await service.update_user(session, user, fields)
    if changes_access:
        await announce_access_change(request, users=[user_id])
    return json_response(service.user_to_api(user))


@documented(
    Operation(
        "Delete a user, their sessions and tokens",
        {204: Reply("deleted"), 409: LAST_ADMIN},
        auth="admin",
        path=USER_PATH,
        tag="users",
    )
)
async def delete_user(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = path_id(request)
    async with transaction(request.app[SESSIONS]) as session:
        user = await service.get_user(session, user_id)
        if user is None:
            raise not_found(f"user {user_id}")
        await service.delete_user(session, user)
    await announce_access_change(request, users=[user_id])
    return web.Response(status=204)


@documented(
    Operation(
        "A user's API tokens (never the tokens themselves)",
        {200: Reply("tokens", array(TOKEN))},
        auth="admin",
        path=USER_PATH,
        tag="users",
    )
)
async def list_tokens(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = path_id(request)
    async with request.app[SESSIONS]() as session:
        if await service.get_user(session, user_id) is None:
            raise not_found(f"user {user_id}")
        tokens = await service.list_api_tokens(session, user_id)
    return json_response([service.token_to_api(token) for token in tokens])


@documented(
    Operation(
        "A new long-lived API token for the user; `token` is shown this once",
        {201: Reply("the token", NEW_TOKEN)},
        auth="admin",
        path=USER_PATH,
        body=NewToken,
        body_required=False,
        example={"name": "fleet dashboard"},
        tag="users",
    )
)
async def create_token(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = path_id(request)
    name = (await read_body(request, NewToken) if request.body_exists else NewToken()).name
    async with transaction(request.app[SESSIONS]) as session:
        if await service.get_user(session, user_id) is None:
            raise not_found(f"user {user_id}")
        record, token = await service.create_api_token(session, user_id, name)
    return json_response({**service.token_to_api(record), "token": token}, status=201)


@documented(
    Operation(
        "Revoke one of a user's API tokens",
        {204: Reply("revoked"), 409: LAST_ADMIN},
        auth="admin",
        path=TOKEN_PATH,
        tag="users",
    )
)
async def delete_token(request: web.Request) -> web.Response:
    require_admin(request)
    user_id, token_id = path_id(request), path_id(request, "token_id")
    async with transaction(request.app[SESSIONS]) as session:
        token = await service.get_api_token(session, user_id, token_id)
        if token is None:
            raise not_found(f"token {token_id} of user {user_id}")
        if token.token_hash == service.hash_token(bearer_token(request) or ""):
            raise HttpError(409, "conflict", "this request is authenticated with that token; use another one")
        await session.delete(token)
    await announce_access_change(request, users=[user_id])
    return web.Response(status=204)


async def create_session(request: web.Request) -> web.Response:
    credentials = await read_body(request, Credentials)
    if len(credentials.password) > MAX_PASSWORD:  # no stored password is longer; scrypt would read all of it
        raise HttpError(401, "unauthorized", "wrong email or password")
    async with transaction(request.app[SESSIONS]) as session:
        made = await login(session, credentials.email, credentials.password)
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


describe(
    create_session,
    Operation(
        "Log in: a session token that expires after 7 days",
        {
            200: Reply("the session", obj({"token": STRING, "expires": TIME})),
            401: error_reply("wrong email or password"),
        },
        auth="none",
        body=Credentials,
        example={"email": "admin@localhost", "password": "not-the-password"},
        tag="session",
    ),
)


@documented(
    Operation(
        "Who is signed in: the user whose token is sent (as Traccar's GET /api/session)",
        {200: Reply("the user", USER)},
        tag="session",
    )
)
async def current_session(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        user = await service.get_user(session, principal(request).user_id)
    if user is None:  # deleted since the middleware looked the token up
        raise not_found("user")
    return json_response(service.user_to_api(user))


describe(
    delete_session,
    Operation("Log out: end the session whose token is sent", {204: Reply("ended (or there was none)")}, tag="session"),
)


ROUTES = [
    Route("GET", "/api/session", current_session),
    Route("POST", "/api/session", create_session),
    Route("DELETE", "/api/session", delete_session),
    Route("GET", "/api/users", list_users),
    Route("POST", "/api/users", create_user),
    Route("GET", "/api/users/{id}", get_user),
    Route("PUT", "/api/users/{id}", update_user),
    Route("DELETE", "/api/users/{id}", delete_user),
    Route("GET", "/api/users/{id}/tokens", list_tokens),
    Route("POST", "/api/users/{id}/tokens", create_token),
    Route("DELETE", "/api/users/{id}/tokens/{token_id}", delete_token),
]
