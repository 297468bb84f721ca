"""/api/users: admins manage users and their API tokens; secrets stored only as hashes."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.client import bearer
from tests.support.factories import USER_TOKEN, Users
from tracker_jobs.users.models import ApiToken, User

Client = TestClient[Any, Any]


async def test_admins_create_change_and_delete_users(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await admin_client.post(
        "/api/users",
        headers=admin_headers,
        json={"name": "Dispatcher", "email": "dispatch@example.com", "password": "correct horse", "role": "user"},
    )
    assert created.status == 201
    user = await created.json()
    assert {key: user[key] for key in ("name", "email", "role", "disabled")} == {
        "name": "Dispatcher",
        "email": "dispatch@example.com",
        "role": "user",
        "disabled": False,
    }
    async with sessions() as session:
        stored = await session.get(User, user["id"])
    assert stored is not None
    assert stored.password_hash is not None
    assert stored.password_hash.startswith("scrypt$")
    assert "correct horse" not in stored.password_hash

    login = await admin_client.post("/api/session", json={"email": "dispatch@example.com", "password": "correct horse"})
    assert login.status == 200
    session_token = (await login.json())["token"]
    assert (await admin_client.get("/api/devices", headers=bearer(session_token))).status == 200

    taken = await admin_client.post(
        "/api/users", headers=admin_headers, json={"email": "dispatch@example.com", "password": "another one"}
    )
    assert taken.status == 409
    renamed = await admin_client.put(
        f"/api/users/{user['id']}",
        headers=admin_headers,
        json={"name": "Night dispatcher", "password": "a new passphrase"},
    )
    assert (await renamed.json())["name"] == "Night dispatcher"
    assert (await admin_client.get("/api/devices", headers=bearer(session_token))).status == 401  # sessions ended
    listed = await (await admin_client.get("/api/users", headers=admin_headers)).json()
    assert [found["email"] for found in listed] == ["admin@localhost", "dispatch@example.com"]
    assert (await admin_client.delete(f"/api/users/{user['id']}", headers=admin_headers)).status == 204
    assert (await admin_client.get(f"/api/users/{user['id']}", headers=admin_headers)).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "long enough"}, "email"),
        ({"email": "no-at-sign", "password": "long enough"}, "email"),
        ({"email": "a@b.c", "password": "short"}, "password"),
        ({"email": "a@b.c", "password": 12345678}, "password"),
        ({"email": "a@b.c", "password": "long enough", "role": "owner"}, "role"),
        ({"email": "a@b.c", "password": "long enough", "disabled": "no"}, "disabled"),
        ({"email": "a@b.c", "password": "long enough", "colour": "red"}, "colour"),
    ],
)
async def test_bad_user_bodies_name_the_field(
    admin_client: Client, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = await admin_client.post("/api/users", json=body, headers=admin_headers)
    assert response.status == 400
    assert (await response.json())["error"]["message"].startswith(f"{field}:")


async def test_api_tokens_are_shown_once_and_can_be_revoked(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession], users: Users
) -> None:
    made = await admin_client.post(f"/api/users/{users.user}/tokens", json={"name": "dashboard"}, headers=admin_headers)
    assert made.status == 201
    token = await made.json()
    assert token["name"] == "dashboard"
    assert len(token["token"]) >= 40
    assert (await admin_client.get("/api/devices", headers=bearer(token["token"]))).status == 200
    listed = await (await admin_client.get(f"/api/users/{users.user}/tokens", headers=admin_headers)).json()
    assert [found["name"] for found in listed] == ["test", "dashboard"]
    assert all("token" not in found for found in listed)
    async with sessions() as session:
        stored = await session.get(ApiToken, token["id"])
    assert stored is not None
    assert token["token"] not in stored.token_hash  # only its SHA-256

    revoked = await admin_client.delete(f"/api/users/{users.user}/tokens/{token['id']}", headers=admin_headers)
    assert revoked.status == 204
    assert (await admin_client.get("/api/devices", headers=bearer(token["token"]))).status == 401
    elsewhere = await admin_client.delete(f"/api/users/{users.other}/tokens/{listed[0]['id']}", headers=admin_headers)
    assert elsewhere.status == 404  # that token is not the other user's


async def test_the_last_admin_and_the_token_in_use_are_protected(
    admin_client: Client, admin_headers: dict[str, str], users: Users
) -> None:
    for change in ({"role": "user"}, {"disabled": True}):
        refused = await admin_client.put("/api/users/1", json=change, headers=admin_headers)
        assert refused.status == 409, change
        assert "last enabled admin" in (await refused.json())["error"]["message"]
    assert (await admin_client.delete("/api/users/1", headers=admin_headers)).status == 409
    own_tokens = await (await admin_client.get("/api/users/1/tokens", headers=admin_headers)).json()
    in_use = await admin_client.delete(f"/api/users/1/tokens/{own_tokens[0]['id']}", headers=admin_headers)
    assert in_use.status == 409
    promoted = await admin_client.put(f"/api/users/{users.user}", json={"role": "admin"}, headers=admin_headers)
    assert promoted.status == 200
    assert (await admin_client.put("/api/users/1", json={"role": "user"}, headers=admin_headers)).status == 200
    assert (await admin_client.get("/api/users", headers=bearer(USER_TOKEN))).status == 200  # now an admin


async def test_users_api_is_for_admins_only(admin_client: Client, users: Users) -> None:
    for method, path in [
        ("GET", "/api/users"),
        ("POST", "/api/users"),
        ("GET", f"/api/users/{users.user}"),
        ("DELETE", f"/api/users/{users.other}"),
        ("POST", f"/api/users/{users.user}/tokens"),
    ]:
        assert (await admin_client.request(method, path, headers=bearer(USER_TOKEN))).status == 403, path
