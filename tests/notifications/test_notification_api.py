"""/api/notifications: each user's notifications are theirs alone, bad ones are 400s naming the field,
links through /api/permissions, the types, the test endpoint; and the fan-out's filters and cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.client import error_of
from tests.support.factories import add_device, make_user
from tracker_jobs.core.db import transaction
from tracker_jobs.events.models import DeviceNotification, Notification, UserNotification
from tracker_jobs.events.store import record_events
from tracker_jobs.events.types import EVENT_TYPES

Client = TestClient[Any, Any]
ANN = {"Authorization": "Bearer ann-token"}
BOB = {"Authorization": "Bearer bob-token"}
WEB = {"type": "deviceOverspeed", "always": True, "notificators": "web"}


async def test_users_see_and_change_only_their_own_notifications(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    await make_user(sessions, "ann@example.com", token="ann-token")
    await make_user(sessions, "bob@example.com", token="bob-token")
    created = await admin_client.post("/api/notifications", json=WEB, headers=ANN)
    assert created.status == 201
    mine = await created.json()
    assert (mine["type"], mine["always"], mine["notificators"], mine["attributes"]) == (
        "deviceOverspeed",
        True,
        "web",
        {},
    )
    assert [n["id"] for n in await (await admin_client.get("/api/notifications", headers=ANN)).json()] == [mine["id"]]
    assert await (await admin_client.get("/api/notifications", headers=BOB)).json() == []
    for method in ("GET", "PUT", "DELETE"):
        response = await admin_client.request(
            method, f"/api/notifications/{mine['id']}", json={"notificators": "web"}, headers=BOB
        )
        assert response.status == 404, method
    changed = await admin_client.put(
        f"/api/notifications/{mine['id']}", json={"type": "alarm", "attributes": {"alarms": "sos"}}, headers=ANN
    )
    assert (await changed.json())["type"] == "alarm"
    assert (await admin_client.delete(f"/api/notifications/{mine['id']}", headers=ANN)).status == 204
    assert await (await admin_client.get("/api/notifications", headers=ANN)).json() == []


async def test_bad_notifications_are_refused_naming_the_field(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    await make_user(sessions, "ann@example.com", token="ann-token")
    hook = {"webhookUrl": "https://example.com/hook"}
    cases = [
        ({**WEB, "type": "teleported"}, "type: expected one of"),
        ({**WEB, "notificators": "web,pigeon"}, "notificators: expected a comma-separated list"),
        ({**WEB, "notificators": " , "}, "notificators: expected a comma-separated list"),
        ({**WEB, "notificators": "mail"}, "notificators: mail needs an SMTP server"),  # none configured here
        ({**WEB, "notificators": "webhook"}, "attributes.webhookUrl"),
        (
            {**WEB, "notificators": "webhook", "attributes": {"webhookUrl": "ftp://example.com/x"}},
            "attributes.webhookUrl",
        ),
        ({**WEB, "notificators": "webhook", "attributes": {**hook, "webhookSecret": 7}}, "attributes.webhookSecret"),
        ({**WEB, "attributes": {"cooldown": -1}}, "attributes.cooldown"),
        ({**WEB, "attributes": {"geofenceIds": ["x"]}}, "attributes.geofenceIds"),
        ({**WEB, "colour": "red"}, "colour: is not a notification field"),
        ({"always": True, "notificators": "web"}, "type: is required"),
    ]
    for body, message in cases:
        response = await admin_client.post("/api/notifications", json=body, headers=ANN)
        assert response.status == 400, body
        assert (await error_of(response))["message"].startswith(message), (body, await error_of(response))
    refused = await admin_client.post("/api/notifications", json={**WEB, "type": "systemAlert"}, headers=ANN)
    assert refused.status == 403
    admins = await admin_client.post("/api/notifications", json={**WEB, "type": "systemAlert"}, headers=admin_headers)
    assert admins.status == 201


async def test_the_types_are_every_event_type_and_the_two_messages(
    admin_client: Client, admin_headers: dict[str, str]
) -> None:
    types = [
        entry["type"]
        for entry in await (await admin_client.get("/api/notifications/types", headers=admin_headers)).json()
    ]
    assert types == [*EVENT_TYPES, "dailySummary", "systemAlert"]


async def test_links_are_made_by_those_who_may(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    bob = await make_user(sessions, "bob@example.com", token="bob-token")
    anns_truck = await add_device(sessions, "ann-1", owner=ann)
    bobs_truck = await add_device(sessions, "bob-1", owner=bob)
    notification = (await (await admin_client.post("/api/notifications", json=WEB, headers=ANN)).json())["id"]
    assert (
        await admin_client.post(
            "/api/permissions", json={"deviceId": anns_truck, "notificationId": notification}, headers=ANN
        )
    ).status == 204
    for body, status in [
        ({"deviceId": bobs_truck, "notificationId": notification}, 404),  # not her device
        ({"deviceId": anns_truck, "notificationId": notification}, 404),  # not his notification
        ({"userId": bob, "notificationId": notification}, 403),  # only admins link users
    ]:
        assert (await admin_client.post("/api/permissions", json=body, headers=BOB)).status == status, body
    for body, field in [
        ({"notificationId": notification}, "deviceId"),
        ({"deviceId": anns_truck, "userId": ann, "notificationId": notification}, "deviceId"),
        ({"deviceId": anns_truck}, "geofenceId"),
    ]:
        response = await admin_client.post("/api/permissions", json=body, headers=ANN)
        assert response.status == 400, body
        assert (await error_of(response))["message"].startswith(field), body
    shared = await admin_client.post(
        "/api/permissions", json={"userId": bob, "notificationId": notification}, headers=admin_headers
    )
    assert shared.status == 204
    assert [n["id"] for n in await (await admin_client.get("/api/notifications", headers=BOB)).json()] == [notification]
    async with sessions() as session:
        assert await session.get(DeviceNotification, (anns_truck, notification)) is not None
        assert await session.get(UserNotification, (bob, notification)) is not None
    unlinked = await admin_client.request(
        "DELETE", "/api/permissions", json={"deviceId": anns_truck, "notificationId": notification}, headers=ANN
    )
    assert unlinked.status == 204
    async with sessions() as session:
        assert await session.get(DeviceNotification, (anns_truck, notification)) is None


async def test_the_test_endpoint_answers_what_each_channel_did(
    admin_client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await make_user(sessions, "ann@example.com", token="ann-token")
    await admin_client.post("/api/notifications", json=WEB, headers=ANN)
    hook = {"webhookUrl": "http://127.0.0.1:9/hook"}  # loopback: refused while private addresses are not allowed
    await admin_client.post(
        "/api/notifications", json={**WEB, "notificators": "webhook", "attributes": hook}, headers=ANN
    )
    async with admin_client.ws_connect("/api/socket", headers=ANN) as ws:
        results = await (await admin_client.post("/api/notifications/test", headers=ANN)).json()
        assert [(r["channel"], r["state"]) for r in results] == [("web", "sent"), ("webhook", "dead")]
        assert "loopback" in results[1]["error"]
        while "events" not in (message := await ws.receive_json(timeout=5)):
            pass
    assert [event["type"] for event in message["events"]] == ["test"]
    log = await (await admin_client.get("/api/notifications/deliveries", headers=ANN)).json()
    assert sorted(entry["state"] for entry in log) == ["dead", "sent"]


async def _notification(
    sessions: async_sessionmaker[AsyncSession], user: int, event_type: str, **attributes: Any
) -> int:
    async with transaction(sessions) as session:
        notification = Notification(type=event_type, always=True, notificators="web", attributes=attributes)
        session.add(notification)
        await session.flush()
        assert notification.id is not None
        session.add(UserNotification(user_id=user, notification_id=notification.id))
    return notification.id


async def _record(sessions: async_sessionmaker[AsyncSession], rows: list[dict[str, Any]], now: datetime) -> list[int]:
    async with transaction(sessions) as session:
        return (await record_events(session, rows, now, 900)).deliveries


async def test_filters_and_cooldown_narrow_who_is_told(sessions: async_sessionmaker[AsyncSession]) -> None:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    stranger = await make_user(sessions, "stranger@example.com", token="stranger-token")
    truck = await add_device(sessions, "truck", owner=ann)
    await _notification(sessions, ann, "alarm", alarms="sos,tow")
    await _notification(sessions, stranger, "alarm")  # always, but the stranger may not see the truck
    await _notification(sessions, ann, "deviceOverspeed", cooldown=600)
    now = datetime.now(UTC)

    def event(kind: str, seconds: int, **attributes: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "device_id": truck,
            "event_time": now - timedelta(seconds=seconds),
            "attributes": attributes,
        }

    assert len(await _record(sessions, [event("alarm", 50, alarm="sos")], now)) == 1
    assert await _record(sessions, [event("alarm", 40, alarm="lowBattery")], now) == []
    assert len(await _record(sessions, [event("alarm", 30, alarm="tow,lowBattery")], now)) == 1
    # Overspeed: the first is told; the next within the 600 s cooldown is not, the same batch or a later one.
    assert len(await _record(sessions, [event("deviceOverspeed", 500), event("deviceOverspeed", 400)], now)) == 1
    assert await _record(sessions, [event("deviceOverspeed", 100)], now) == []
    assert len(await _record(sessions, [event("deviceOverspeed", 500 - 601)], now + timedelta(seconds=200))) == 1


async def test_a_users_time_zone_is_checked(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    for zone in ("Mars/Olympus_Mons", "", 5):
        response = await admin_client.put(
            f"/api/users/{ann}", json={"attributes": {"timezone": zone}}, headers=admin_headers
        )
        assert response.status == 400, zone
        assert (await error_of(response))["message"].startswith("attributes: timezone: expected an IANA"), zone
    changed = await admin_client.put(
        f"/api/users/{ann}", json={"attributes": {"timezone": "Europe/Berlin"}}, headers=admin_headers
    )
    assert (await changed.json())["attributes"] == {"timezone": "Europe/Berlin"}
