"""From a device's OsmAnd request, through Redis and the real worker, to the database and the API."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.jobs.refs import POSITIONS


async def test_osmand_position_is_stored_and_readable(
    settings: Settings,
    ingest_client: aiohttp.ClientSession,
    admin_client: TestClient[Any, Any],
    admin_headers: dict[str, str],
) -> None:
    created = await admin_client.post(
        "/api/devices", json={"name": "van 7", "uniqueId": "van-7"}, headers=admin_headers
    )
    assert created.status == 201
    device = await created.json()

    query = {"id": "van-7", "lat": "52.52", "lon": "13.405", "timestamp": "1767225600", "speed": "12.5"}
    response = await ingest_client.get("/", params=query)
    assert response.status == 200
    assert await response.read() == b""

    assert await run_burst(settings, POSITIONS) >= 1

    latest = await admin_client.get("/api/positions", headers=admin_headers)
    assert latest.status == 200
    positions = await latest.json()
    assert len(positions) == 1
    position = positions[0]
    assert position["deviceId"] == device["id"]
    assert position["latitude"] == 52.52
    assert position["longitude"] == 13.405
    assert position["speed"] == 12.5
    assert position["fixTime"] == "2026-01-01T00:00:00+00:00"

    ranged = await admin_client.get(
        "/api/positions",
        params={"deviceId": str(device["id"]), "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
        headers=admin_headers,
    )
    assert [p["id"] for p in await ranged.json()] == [position["id"]]

    refreshed = await (await admin_client.get(f"/api/devices/{device['id']}", headers=admin_headers)).json()
    assert refreshed["status"] == "online"
    assert refreshed["positionId"] == position["id"]
