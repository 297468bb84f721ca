"""The batch API and Traccar Client's JSON: good positions go through, bad ones are listed by index."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from arq.jobs import Job
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.client import stored
from tests.support.factories import add_device, make_user, position
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.core.serialization import deserialize_job
from tracker_jobs.jobs.refs import POSITIONS

Client = TestClient[Any, Any]


async def test_batch_accepts_the_good_and_lists_the_bad(
    settings: Settings, admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "truck")
    body = [
        position(device, 0),
        position(device, 10, latitude=123),
        {"deviceId": device, "fixTime": "nope", "latitude": 1, "longitude": 2},
        position(999_999, 20),
        "not an object",
        position(device, 30, attributes={"ignition": True, "fuel": 41.5}),
        {"uniqueId": "truck", "fixTime": "2026-01-01T00:01:00Z", "latitude": 10.031, "longitude": 20.0},
    ]
    response = await admin_client.post("/api/positions", json=body, headers=admin_headers)
    assert response.status == 202
    answer = await response.json()
    assert answer["accepted"] == 3
    assert [(r["index"], r["reason"].split(":")[0]) for r in answer["rejected"]] == [
        (1, "latitude"),
        (2, "fixTime"),
        (3, "deviceId"),
        (4, "position"),
    ]
    assert answer["task_id"].startswith("drain:")
    await run_burst(settings, POSITIONS)
    positions = await stored(admin_client, admin_headers)
    assert [p["fixTime"] for p in positions] == [
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:00:30+00:00",
        "2026-01-01T00:01:00+00:00",
    ]
    assert positions[1]["attributes"]["fuel"] == 41.5
    assert positions[1]["attributes"]["totalDistance"] > positions[0]["attributes"]["totalDistance"]


async def test_seed_endpoints_and_the_limit(
    settings: Settings, admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "van")
    wrapped = await admin_client.post(
        "/api/tasks/position/process-batch", json={"positions": [position(device, 0)]}, headers=admin_headers
    )
    assert wrapped.status == 202
    single = await admin_client.post(
        "/api/tasks/position/process-single", json=position(device, 1), headers=admin_headers
    )
    assert single.status == 202
    assert (await single.json())["accepted"] == 1
    bad_single = await admin_client.post(
        "/api/tasks/position/process-single", json=position(device, 2, longitude="east"), headers=admin_headers
    )
    assert bad_single.status == 400
    assert (await bad_single.json())["error"]["message"].startswith("longitude:")
    too_many = [position(device, second) for second in range(settings.batch_limit + 1)]
    response = await admin_client.post(
        "/api/positions",
        data=io.BytesIO(orjson.dumps(too_many)),
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert response.status == 413
    assert (await response.json())["error"]["message"].startswith("positions:")
    all_bad = await admin_client.post("/api/positions", json=[{"deviceId": device}], headers=admin_headers)
    assert all_bad.status == 400
    assert (await all_bad.json())["rejected"] == [
        {"index": 0, "code": "invalid_field", "reason": "latitude: is required"}
    ]
    not_a_list = await admin_client.post("/api/positions", json={"deviceId": device}, headers=admin_headers)
    assert not_a_list.status == 400
    await run_burst(settings, POSITIONS)
    assert len(await stored(admin_client, admin_headers)) == 2


async def test_users_may_only_send_for_their_devices(
    admin_client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    mine = await add_device(sessions, "ann-car", owner=ann)
    theirs = await add_device(sessions, "bob-car")
    response = await admin_client.post(
        "/api/positions", json=[position(mine, 0), position(theirs, 0)], headers={"Authorization": "Bearer ann-token"}
    )
    assert response.status == 202
    answer = await response.json()
    assert answer["accepted"] == 1
    assert answer["rejected"] == [
        {"index": 1, "code": "unknown_device", "reason": f"deviceId: unknown device {theirs}"}
    ]


async def test_traccar_client_json(
    settings: Settings,
    ingest_client: aiohttp.ClientSession,
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_device(sessions, "phone-7")
    body = {
        "device_id": "phone-7",
        "location": {
            "timestamp": "2026-01-01T00:00:00.000Z",
            "coords": {"latitude": 48.85, "longitude": 2.35, "speed": 10, "heading": -1, "accuracy": 5, "altitude": 35},
            "is_moving": True,
            "odometer": 1234.5,
            "event": "motionchange",
            "battery": {"level": 0.66, "is_charging": False},
            "activity": {"type": "in_vehicle"},
            "extras": {"driver": "zoe"},
        },
    }
    response = await ingest_client.post("/", json=body)
    assert response.status == 200
    missing = await ingest_client.post("/", json={"device_id": "phone-7", "location": {"coords": {"latitude": 1}}})
    assert missing.status == 400
    assert (await missing.json())["error"]["message"].startswith("location.coords.longitude:")
    await run_burst(settings, POSITIONS)
    [stored_position] = await stored(admin_client, admin_headers)
    assert stored_position["speed"] == pytest.approx(10 * 3600 / 1852)
    assert stored_position["course"] == 0.0
    assert stored_position["attributes"]["batteryLevel"] == 66
    assert stored_position["attributes"]["charge"] is False
    assert stored_position["attributes"]["activity"] == "in_vehicle"
    assert stored_position["attributes"]["driver"] == "zoe"
    assert stored_position["attributes"]["event"] == "motionchange"


async def test_drain_result_names_what_the_pipeline_dropped(
    settings: Settings,
    admin_client: Client,
    admin_headers: dict[str, str],
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    device = await add_device(sessions, "glitchy")
    body = [
        position(device, 0),
        position(device, 10, latitude=0.0, longitude=0.0),
        position(device, 20),
        position(device, 30, latitude=60.0),
        position(device, 40),
    ]
    answer = await (await admin_client.post("/api/positions", json=body, headers=admin_headers)).json()
    await run_burst(settings, POSITIONS)
    info = await Job(answer["task_id"], redis, _deserializer=deserialize_job).result_info()
    assert info is not None
    assert info.result["dropped"] == {"zero": 1, "jump": 1}
    assert info.result["stored"] == 3
    positions = await stored(admin_client, admin_headers)
    assert [p["fixTime"][-8:-6] for p in positions] == ["00", "20", "40"]
