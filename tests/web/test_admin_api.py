"""The admin API: token auth, roles, devices CRUD, positions queries, and JSON errors for bad input."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.client import error_of
from tests.support.factories import make_user
from tracker_jobs.core.db import transaction
from tracker_jobs.devices.models import Device, UserDevice

Client = TestClient[Any, Any]


async def test_api_needs_a_token(admin_client: Client) -> None:
    for method, path in [
        ("GET", "/api/devices"),
        ("POST", "/api/devices"),
        ("GET", "/api/positions"),
        ("GET", "/api/devices/1"),
        ("DELETE", "/api/session"),
    ]:
        response = await admin_client.request(method, path)
        assert response.status == 401, path
        assert (await error_of(response))["code"] == "unauthorized"
    wrong = await admin_client.get("/api/devices", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert "unknown or expired" in (await error_of(wrong))["message"]


async def test_health_needs_no_token_and_reports_no_workers_as_degraded(admin_client: Client) -> None:
    response = await admin_client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert {key: body[key] for key in ("status", "redis", "database", "workers")} == {
        "status": "degraded",
        "redis": {"connected": True},
        "database": {"connected": True},
        "workers": 0,
    }


async def test_device_crud(admin_client: Client, admin_headers: dict[str, str]) -> None:
    created = await admin_client.post(
        "/api/devices", json={"name": "Truck 1", "uniqueId": "t1", "speedLimit": 50}, headers=admin_headers
    )
    assert created.status == 201
    device = await created.json()
    assert device["uniqueId"] == "t1"
    assert device["status"] == "offline"
    assert device["speedLimit"] == 50

    listed = await (await admin_client.get("/api/devices", headers=admin_headers)).json()
    assert [d["id"] for d in listed] == [device["id"]]

    updated = await admin_client.put(
        f"/api/devices/{device['id']}",
        json={"name": "Truck one", "attributes": {"color": "red"}},
        headers=admin_headers,
    )
    assert updated.status == 200
    assert (await updated.json())["name"] == "Truck one"

    duplicate = await admin_client.post("/api/devices", json={"name": "x", "uniqueId": "t1"}, headers=admin_headers)
    assert duplicate.status == 409
    assert "uniqueId" in (await error_of(duplicate))["message"]

    deleted = await admin_client.delete(f"/api/devices/{device['id']}", headers=admin_headers)
    assert deleted.status == 204
    gone = await admin_client.get(f"/api/devices/{device['id']}", headers=admin_headers)
    assert gone.status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "uniqueId"),
        ({"name": "x", "uniqueId": ""}, "uniqueId"),
        ({"name": "x", "uniqueId": 5.5}, "uniqueId"),
        ({"name": "", "uniqueId": "u"}, "name"),
        ({"name": "x", "uniqueId": "u", "speedLimit": "fast"}, "speedLimit"),
        ({"name": "x", "uniqueId": "u", "speedLimit": -3}, "speedLimit"),
        ({"name": "x", "uniqueId": "u", "attributes": [1]}, "attributes"),
        ({"name": "x", "uniqueId": "u", "disabled": "yes"}, "disabled"),
        ({"name": "x", "uniqueId": "u", "colour": "red"}, "colour"),
    ],
)
async def test_bad_device_bodies_name_the_field(
    admin_client: Client, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = await admin_client.post("/api/devices", json=body, headers=admin_headers)
    assert response.status == 400
    assert (await error_of(response))["message"].startswith(f"{field}:")


async def test_malformed_bodies_and_ids(admin_client: Client, admin_headers: dict[str, str]) -> None:
    not_json = await admin_client.post(
        "/api/devices", data=b"{nope", headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert not_json.status == 400
    assert (await error_of(not_json))["code"] == "invalid_json"
    array = await admin_client.post("/api/devices", json=[1, 2], headers=admin_headers)
    assert array.status == 400
    form = await admin_client.post("/api/devices", data={"a": "b"}, headers=admin_headers)
    assert form.status == 415
    for bad_id in ["abc", "0", "-1", "99999999999999999999"]:
        response = await admin_client.get(f"/api/devices/{bad_id}", headers=admin_headers)
        assert response.status == 404, bad_id
        await error_of(response)
    unknown_route = await admin_client.get("/api/nothing-here", headers=admin_headers)
    assert unknown_route.status == 404
    await error_of(unknown_route)
    wrong_method = await admin_client.patch("/api/devices", headers=admin_headers)
    assert wrong_method.status == 405
    await error_of(wrong_method)


async def test_oversized_body_is_413_json(admin_client: Client, admin_headers: dict[str, str]) -> None:
    huge = b'{"name": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    response = await admin_client.post(
        "/api/devices", data=io.BytesIO(huge), headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await error_of(response))["code"] == "too_large"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"deviceId": "x"}, "deviceId"),
        ({"from": "soon"}, "from"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"limit": "0"}, "limit"),
    ],
)
async def test_bad_position_queries(
    admin_client: Client, admin_headers: dict[str, str], query: dict[str, str], field: str
) -> None:
    response = await admin_client.get("/api/positions", params=query, headers=admin_headers)
    assert response.status == 400
    assert (await error_of(response))["message"].startswith(f"{field}:")


async def test_users_see_only_their_devices(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    async with transaction(sessions) as session:
        mine, theirs = Device(unique_id="ann-1", name="ann's"), Device(unique_id="bob-1", name="bob's")
        session.add_all([mine, theirs])
        await session.flush()
        assert mine.id is not None
        session.add(UserDevice(user_id=ann, device_id=mine.id))
    ann_headers = {"Authorization": "Bearer ann-token"}
    listed = await (await admin_client.get("/api/devices", headers=ann_headers)).json()
    assert [d["uniqueId"] for d in listed] == ["ann-1"]
    assert (await admin_client.get(f"/api/devices/{theirs.id}", headers=ann_headers)).status == 404
    assert (await admin_client.delete(f"/api/devices/{theirs.id}", headers=ann_headers)).status == 404
    assert (await admin_client.put(f"/api/devices/{theirs.id}", json={"name": "x"}, headers=ann_headers)).status == 404
    created = await admin_client.post("/api/devices", json={"name": "new", "uniqueId": "ann-2"}, headers=ann_headers)
    assert created.status == 201
    listed = await (await admin_client.get("/api/devices", headers=ann_headers)).json()
    assert [d["uniqueId"] for d in listed] == ["ann-1", "ann-2"]
    everything = await (await admin_client.get("/api/devices", headers=admin_headers)).json()
    assert len(everything) == 3


async def test_login_and_logout(admin_client: Client, sessions: async_sessionmaker[AsyncSession]) -> None:
    await make_user(sessions, "cy@example.com", token="cy-token", password="correct horse")
    wrong = await admin_client.post("/api/session", json={"email": "cy@example.com", "password": "nope"})
    assert wrong.status == 401
    missing = await admin_client.post("/api/session", json={"email": "cy@example.com"})
    assert missing.status == 400
    assert (await error_of(missing))["message"].startswith("password:")
    good = await admin_client.post("/api/session", json={"email": "cy@example.com", "password": "correct horse"})
    assert good.status == 200
    session = await good.json()
    assert session["expires"].endswith("+00:00")
    headers = {"Authorization": f"Bearer {session['token']}"}
    assert (await admin_client.get("/api/devices", headers=headers)).status == 200
    assert (await admin_client.delete("/api/session", headers=headers)).status == 204
    assert (await admin_client.get("/api/devices", headers=headers)).status == 401
