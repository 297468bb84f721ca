"""/api/geofences and /api/permissions: each user's geofences are theirs alone, bad areas are 400s
naming the problem, and a device linked through the API gets its enter and exit events from the
worker."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.client import error_of
from tests.support.factories import add_device, make_user
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.events.models import Event, Geofence
from tracker_jobs.jobs.refs import POSITIONS

Client = TestClient[Any, Any]
ANN = {"Authorization": "Bearer ann-token"}
BOB = {"Authorization": "Bearer bob-token"}
DEPOT = {"name": "Depot", "area": "CIRCLE (52.5 13.4, 200)"}


async def test_users_see_and_change_only_their_own_geofences(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    await make_user(sessions, "ann@example.com", token="ann-token")
    await make_user(sessions, "bob@example.com", token="bob-token")
    created = await admin_client.post("/api/geofences", json=DEPOT, headers=ANN)
    assert created.status == 201
    depot = await created.json()
    assert (depot["name"], depot["area"], depot["attributes"]) == ("Depot", DEPOT["area"], {})
    assert [g["id"] for g in await (await admin_client.get("/api/geofences", headers=ANN)).json()] == [depot["id"]]
    assert await (await admin_client.get("/api/geofences", headers=BOB)).json() == []
    assert depot["id"] in [
        g["id"] for g in await (await admin_client.get("/api/geofences", headers=admin_headers)).json()
    ]
    for method in ("GET", "PUT", "DELETE"):
        response = await admin_client.request(
            method, f"/api/geofences/{depot['id']}", json={"name": "mine"}, headers=BOB
        )
        assert response.status == 404, method

    moved = await admin_client.put(
        f"/api/geofences/{depot['id']}", json={"area": "CIRCLE (52.6 13.4, 300)"}, headers=ANN
    )
    assert (await moved.json())["area"] == "CIRCLE (52.6 13.4, 300)"
    renamed = await admin_client.put(f"/api/geofences/{depot['id']}", json={"name": "Depot 2"}, headers=ANN)
    assert renamed.status == 200
    async with sessions() as session:
        stored = await session.get(Geofence, depot["id"])
    assert stored is not None
    assert stored.revision == 2  # the area moved it on, the name did not: workers parse it again once
    assert (await admin_client.delete(f"/api/geofences/{depot['id']}", headers=ANN)).status == 204
    assert await (await admin_client.get("/api/geofences", headers=ANN)).json() == []


async def test_bad_geofences_are_refused_naming_the_problem(
    admin_client: Client, admin_headers: dict[str, str]
) -> None:
    cases = [
        ({"name": "x", "area": "POLYGON ((52 13, 52 14, 53 14))"}, "area: a polygon's ring must be closed"),
        ({"name": "x", "area": "CIRCLE (95 13, 10)"}, "area: latitude must be within"),
        ({"name": "x", "area": "CIRCLE (52 13, 0)"}, "area: a circle's radius must be more than 0"),
        ({"name": "x", "area": "POLYGON ((52 13, 53 14, 52 14, 53 13, 52 13))"}, "area: the polygon is not valid"),
        (
            {"name": "x", "area": "LINESTRING (52 13, 52 14)", "attributes": {"polylineDistance": -1}},
            "attributes.polylineDistance",
        ),
        ({"name": "x", "area": "CIRCLE (52 13, 10)", "attributes": {"hysteresis": -5}}, "attributes.hysteresis"),
        ({"area": "CIRCLE (52 13, 10)"}, "name: is required"),
        ({"name": "x", "area": "CIRCLE (52 13, 10)", "colour": "red"}, "colour: is not a geofence field"),
    ]
    for body, message in cases:
        response = await admin_client.post("/api/geofences", json=body, headers=admin_headers)
        assert response.status == 400, body
        assert (await error_of(response))["message"].startswith(message), body


async def test_a_device_linked_through_the_api_gets_enter_and_exit_events(
    settings: Settings, admin_client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    await make_user(sessions, "bob@example.com", token="bob-token")
    van = await add_device(sessions, "ann-van", owner=ann)
    depot = await (await admin_client.post("/api/geofences", json=DEPOT, headers=ANN)).json()
    link = {"deviceId": van, "geofenceId": depot["id"]}
    assert (await admin_client.post("/api/permissions", json=link, headers=BOB)).status == 404  # not bob's
    assert (await admin_client.post("/api/permissions", json=link, headers=ANN)).status == 204
    track = [(52.49, 0), (52.5, 60), (52.5, 120), (52.51, 180)]  # outside, in, in, out (1.1 km north)
    body = [
        {"deviceId": van, "fixTime": 1_767_225_600 + second, "latitude": lat, "longitude": 13.4, "speed": 10}
        for lat, second in track
    ]
    assert (await admin_client.post("/api/positions", json=body, headers=ANN)).status == 202
    await run_burst(settings, POSITIONS)
    async with sessions() as session:
        events = (
            (
                await session.execute(
                    select(Event)
                    .where(col(Event.device_id) == van, col(Event.type).startswith("geofence"))
                    .order_by(col(Event.event_time))
                )
            )
            .scalars()
            .all()
        )
    assert [(event.type, event.geofence_id) for event in events] == [
        ("geofenceEnter", depot["id"]),
        ("geofenceExit", depot["id"]),
    ]
    query = {"deviceId": str(van), "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    positions = await (await admin_client.get("/api/positions", params=query, headers=ANN)).json()
    assert [p["attributes"].get("geofenceIds") for p in positions] == [None, [depot["id"]], [depot["id"]], None]
    entered = await (await admin_client.get(f"/api/events/{events[0].id}", headers=ANN)).json()
    assert (entered["type"], entered["deviceId"], entered["geofenceId"]) == ("geofenceEnter", van, depot["id"])
    assert (entered["latitude"], entered["longitude"], entered["eventTime"]) == (
        52.5,
        13.4,
        "2026-01-01T00:01:00+00:00",
    )
    assert (await admin_client.get(f"/api/events/{events[0].id}", headers=BOB)).status == 404  # not bob's device

    async def listed(query: str, headers: dict[str, str]) -> list[tuple[str, int]]:
        response = await admin_client.get(f"/api/events?{query}", headers=headers)
        assert response.status == 200, await response.text()
        return [(event["type"], event["id"]) for event in await response.json()]

    every = await listed("", ANN)  # newest first; the device's other events (online, motion) too
    assert [(kind, event_id) for kind, event_id in every if kind.startswith("geofence")] == [
        ("geofenceExit", events[1].id),
        ("geofenceEnter", events[0].id),
    ]
    assert await listed("type=geofenceEnter&type=geofenceExit&limit=1", ANN) == [("geofenceExit", events[1].id)]
    assert await listed(f"deviceId={van}&type=geofenceEnter", ANN) == [("geofenceEnter", events[0].id)]
    assert await listed("", BOB) == []  # none about bob's devices
    assert await listed(f"deviceId={van}", BOB) == []  # naming ann's device shows bob nothing
    unknown = await admin_client.get("/api/events?type=teleported", headers=ANN)
    assert unknown.status == 400
    assert (await error_of(unknown))["message"].startswith("type:")
    assert (await admin_client.delete("/api/permissions", json=link, headers=ANN)).status == 204


async def test_maintenance_items_of_ones_own_devices_and_their_events(
    settings: Settings, admin_client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    await make_user(sessions, "bob@example.com", token="bob-token")
    van = await add_device(sessions, "ann-van-service", owner=ann)
    body = {"deviceId": van, "name": "Oil", "type": "totalDistance", "start": 500, "period": 1000}
    assert (await admin_client.post("/api/maintenance", json=body, headers=BOB)).status == 404  # not bob's van
    for bad, field in (({**body, "period": 0}, "period"), ({**body, "start": "soon"}, "start")):
        refused = await admin_client.post("/api/maintenance", json=bad, headers=ANN)
        assert (refused.status, (await error_of(refused))["message"].split(":")[0]) == (400, field)
    created = await admin_client.post("/api/maintenance", json=body, headers=ANN)
    assert created.status == 201
    item = await created.json()
    assert await (await admin_client.get("/api/maintenance", headers=BOB)).json() == []
    assert (await admin_client.put(f"/api/maintenance/{item['id']}", json={"period": 2000}, headers=BOB)).status == 404
    changed = await admin_client.put(f"/api/maintenance/{item['id']}", json={"period": 700}, headers=ANN)
    assert (await changed.json())["period"] == 700
    # 0.01 degree of latitude (1,113 m) a minute for 3 minutes: at 0, 1,113, 2,226 and 3,339 m, due at
    # 500, 1,200, 1,900, 2,600 and 3,300 m; two passed in one step make one event naming the later.
    track = [
        {"deviceId": van, "fixTime": 1_767_225_600 + 60 * k, "latitude": 52.0 + 0.01 * k, "longitude": 13.4}
        for k in range(4)
    ]
    assert (await admin_client.post("/api/positions", json=track, headers=ANN)).status == 202
    await run_burst(settings, POSITIONS)
    async with sessions() as session:
        due = (
            (await session.execute(select(Event).where(col(Event.device_id) == van, col(Event.type) == "maintenance")))
            .scalars()
            .all()
        )
    assert sorted(event.attributes["due"] for event in due) == [500.0, 1900.0, 3300.0]
    assert (await admin_client.delete(f"/api/maintenance/{item['id']}", headers=ANN)).status == 204


async def test_a_maintenance_item_applies_to_each_device_linked_to_it(
    settings: Settings, admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    bob = await make_user(sessions, "bob@example.com", token="bob-token")
    first = await add_device(sessions, "ann-van-1", owner=ann)
    second = await add_device(sessions, "ann-van-2", owner=ann)
    bobs = await add_device(sessions, "bob-van", owner=bob)
    body = {"deviceId": first, "name": "Oil", "type": "totalDistance", "start": 500, "period": 1000}
    item = await (await admin_client.post("/api/maintenance", json=body, headers=ANN)).json()
    link = {"deviceId": second, "maintenanceId": item["id"]}
    # Neither may link ann's item to bob's van (each sees only one of them); items are linked to devices.
    assert (await admin_client.post("/api/permissions", json={**link, "deviceId": bobs}, headers=BOB)).status == 404
    assert (await admin_client.post("/api/permissions", json={**link, "deviceId": bobs}, headers=ANN)).status == 404
    by_user = await admin_client.post(
        "/api/permissions", json={"userId": bob, "maintenanceId": item["id"]}, headers=admin_headers
    )
    assert (by_user.status, (await error_of(by_user))["message"].split(":")[0]) == (400, "maintenanceId")
    assert (await admin_client.post("/api/permissions", json=link, headers=ANN)).status == 204
    assert (await admin_client.post("/api/permissions", json=link, headers=ANN)).status == 204  # linked already

    # Both vans drive 3.3 km (1,113 m a minute): each passes 500, 1,500 and 2,500 m on its own odometer.
    track = [
        {"deviceId": device, "fixTime": 1_767_225_600 + 60 * k, "latitude": 52.0 + 0.01 * k, "longitude": 13.4}
        for device in (first, second)
        for k in range(4)
    ]
    assert (await admin_client.post("/api/positions", json=track, headers=ANN)).status == 202
    await run_burst(settings, POSITIONS)

    async def due_of(device: int) -> list[float]:
        async with sessions() as session:
            query = select(Event).where(col(Event.device_id) == device, col(Event.type) == "maintenance")
            return sorted(event.attributes["due"] for event in (await session.execute(query)).scalars())

    assert await due_of(first) == await due_of(second) == [500.0, 1500.0, 2500.0]

    # The item stays with the device it was created for.
    creator = {"deviceId": first, "maintenanceId": item["id"]}
    refused = await admin_client.delete("/api/permissions", json=creator, headers=ANN)
    assert (refused.status, (await error_of(refused))["message"].split(":")[0]) == (400, "deviceId")
    # Unlinked, the second van's next kilometres make no event; the first's still do.
    assert (await admin_client.delete("/api/permissions", json=link, headers=ANN)).status == 204
    more = [
        {"deviceId": device, "fixTime": 1_767_225_600 + 60 * k, "latitude": 52.0 + 0.01 * k, "longitude": 13.4}
        for device in (first, second)
        for k in range(4, 6)
    ]
    assert (await admin_client.post("/api/positions", json=more, headers=ANN)).status == 202
    await run_burst(settings, POSITIONS)
    # At 4,452 and 5,565 m: 3,500, then 4,500 and 5,500 in one step (one event, naming the later).
    assert await due_of(first) == [500.0, 1500.0, 2500.0, 3500.0, 5500.0]
    assert await due_of(second) == [500.0, 1500.0, 2500.0]
