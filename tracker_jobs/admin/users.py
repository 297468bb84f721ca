"""/api/users (admins only): users with roles admin and user, and each user's long-lived API tokens.

Passwords are stored only as scrypt hashes and tokens only as SHA-256; a new token is shown once.
The last enabled admin cannot be deleted, disabled or demoted, and a request cannot delete its own token.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracker_jobs.admin.auth import announce_access_change, bearer_token, require_admin
from tracker_jobs.admin.openapi import (
    BOOLEAN,
    ID,
    INTEGER,
    STRING,
    TIME,
    Operation,
    Reply,
    array,
    documented,
    error_reply,
    nullable,
    obj,
)
from tracker_jobs.admin.params import json_object, path_id
from tracker_jobs.admin.responses import json_response
from tracker_jobs.admin.state import SESSIONS
from tracker_jobs.core.db import transaction
from tracker_jobs.core.errors import FieldError, HttpError, not_found
from tracker_jobs.core.fields import parse_text
from tracker_jobs.users import service
from tracker_jobs.users.models import Role

USER = obj(
    {
        "id": INTEGER,
        "name": STRING,
        "email": STRING,
        "role": {"type": "string", "enum": list(Role)},
        "disabled": BOOLEAN,
        "createdAt": TIME,
    }
)
USER_INPUT = obj(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 128},
        "email": {"type": "string", "minLength": 3, "maxLength": 256},
        "password": {"type": "string", "minLength": service.MIN_PASSWORD, "maxLength": service.MAX_PASSWORD},
        "role": {"type": "string", "enum": list(Role)},
        "disabled": BOOLEAN,
    },
    required=(),
)
TOKEN = obj({"id": INTEGER, "userId": INTEGER, "name": STRING, "createdAt": TIME, "lastUsedAt": nullable(TIME)})
NEW_TOKEN = {**TOKEN, "properties": {**TOKEN["properties"], "token": STRING}, "required": [*TOKEN["required"], "token"]}
USER_PATH = {"id": ID}
TOKEN_PATH = {"id": ID, "token_id": ID}
TAKEN = error_reply("the email belongs to another user")
LAST_ADMIN = error_reply("the change would leave no enabled admin, or delete the token this request uses")


def user_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The fields a POST or PUT body sets, checked; unknown keys are refused by name."""
    unknown = sorted(set(body) - {"name", "email", "password", "role", "disabled"})
    if unknown:
        raise FieldError(unknown[0][:40], "is not a user field")
    try:
        return _checked_user_fields(body, creating=creating)
    except FieldError as error:
        raise FieldError(error.field, error.problem) from None


def parse_email(raw: object) -> str:
    # Lowercasing can lengthen a few letters ("İ" becomes two characters): the length is of what is stored.
    email = service.normalize_email(parse_text("email", raw, 1024))
    if "@" not in email or not 3 <= len(email) <= 256:
        raise FieldError("email", "must be an email address of at most 256 characters")
    return email


def _checked_user_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if creating or "email" in body:
        fields["email"] = parse_email(body.get("email"))
    if creating or "name" in body:
        fields["name"] = parse_text("name", body.get("name", fields.get("email")), 128)
    if creating or "password" in body:
        password = body.get("password")
        if not isinstance(password, str) or not service.MIN_PASSWORD <= len(password) <= service.MAX_PASSWORD:
            raise FieldError("password", f"must be text of {service.MIN_PASSWORD} to {service.MAX_PASSWORD} characters")
        fields["password"] = password
    if "role" in body or creating:
        role = body.get("role", Role.USER)
        if role not in tuple(Role):
            raise FieldError("role", f"must be one of {', '.join(Role)}")
        fields["role"] = role
    if "disabled" in body:
        if not isinstance(body["disabled"], bool):
            raise FieldError("disabled", "must be true or false")
        fields["disabled"] = body["disabled"]
    return fields


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
        body=USER_INPUT,
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
    fields = user_fields(await json_object(request), creating=True)
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
        body=USER_INPUT,
        example={"name": "Dispatcher two"},
        tag="users",
    )
)
async def update_user(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = path_id(request)
    fields = user_fields(await json_object(request), creating=False)
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
        body=obj({"name": {"type": "string", "minLength": 1, "maxLength": 128}}),
        body_required=False,
        example={"name": "fleet dashboard"},
        tag="users",
    )
)
async def create_token(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = path_id(request)
    body = await json_object(request) if request.body_exists else {}
    unknown = sorted(set(body) - {"name"})
    if unknown:
        raise FieldError(unknown[0], "is not a token field")
    try:
        name = parse_text("name", body.get("name", "api"), 128)
    except FieldError as error:
        raise FieldError(error.field, error.problem) from None
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


def install(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/users", list_users)
    router.add_post("/api/users", create_user)
    router.add_get("/api/users/{id}", get_user)
    router.add_put("/api/users/{id}", update_user)
    router.add_delete("/api/users/{id}", delete_user)
    router.add_get("/api/users/{id}/tokens", list_tokens)
    router.add_post("/api/users/{id}/tokens", create_token)
    router.add_delete("/api/users/{id}/tokens/{token_id}", delete_token)
