"""Live state: websocket updates per user, the live cache, statistics and online/unknown/offline."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.factories import add_device, make_user, position
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.devices.status import refresh_statuses, status_after_silence
from tracker_jobs.jobs.refs import JOBS, POSITIONS
from tracker_jobs.positions import live
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.statistics import summarise
from tracker_jobs.web.app import create_admin_app

Client = TestClient[Any, Any]


async def next_message(ws: Any) -> dict[str, Any]:
    message = await ws.receive(timeout=10.0)
    assert message.type == WSMsgType.TEXT, message
    found: dict[str, Any] = orjson.loads(message.data)
    return found


async def test_socket_needs_a_token(admin_client: Client) -> None:
    response = await admin_client.get("/api/socket")
    assert response.status == 401


async def test_socket_pushes_each_user_only_their_devices(
    settings: Settings,
    redis: ArqRedis,
    engine: AsyncEngine,
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    mine = await add_device(sessions, "ann-car", owner=ann)
    theirs = await add_device(sessions, "bob-car")
    # A second admin process: each serves its own clients from the same pub/sub channel.
    async with TestClient(TestServer(create_admin_app(settings, redis, engine))) as second_process:
        async with (
            admin_client.ws_connect("/api/socket", headers=admin_headers) as admin_ws,
            second_process.ws_connect("/api/socket", params={"token": "ann-token"}) as ann_ws,
        ):
            assert [d["uniqueId"] for d in (await next_message(admin_ws))["devices"]] == ["ann-car", "bob-car"]
            assert (await next_message(admin_ws))["positions"] == []
            assert [d["uniqueId"] for d in (await next_message(ann_ws))["devices"]] == ["ann-car"]
            assert (await next_message(ann_ws))["positions"] == []

            later = await add_device(sessions, "registered-after-connect")
            body = [position(mine, 0), position(theirs, 0), position(later, 0)]
            assert (await admin_client.post("/api/positions", json=body, headers=admin_headers)).status == 202
            await run_burst(settings, POSITIONS)

            # One message per stored batch; the three devices sit in different partitions.
            seen = [await next_message(admin_ws) for _ in range(3)]
            assert sorted(p["deviceId"] for m in seen for p in m["positions"]) == sorted([mine, theirs, later])
            assert {d["status"] for m in seen for d in m["devices"]} == {"online"}
            only_mine = await next_message(ann_ws)
            assert [p["deviceId"] for p in only_mine["positions"]] == [mine]
            assert [d["id"] for d in only_mine["devices"]] == [mine]
            with pytest.raises(asyncio.TimeoutError):
                await ann_ws.receive(timeout=0.5)  # nothing of the other devices reaches ann

        # A new socket starts from the newest positions (from the live cache).
        async with second_process.ws_connect("/api/socket", params={"token": "ann-token"}) as again:
            await next_message(again)
            assert [p["deviceId"] for p in (await next_message(again))["positions"]] == [mine]


async def test_newest_position_comes_from_the_live_cache_and_late_ones_do_not_replace_it(
    settings: Settings,
    admin_client: Client,
    admin_headers: dict[str, str],
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    device = await add_device(sessions, "courier")
    await admin_client.post("/api/positions", json=[position(device, 100)], headers=admin_headers)
    await run_burst(settings, POSITIONS)
    await admin_client.post("/api/positions", json=[position(device, 50)], headers=admin_headers)  # arrives late
    await run_burst(settings, POSITIONS)
    [latest] = await (await admin_client.get("/api/positions", headers=admin_headers)).json()
    assert latest["fixTime"] == "2026-01-01T00:01:40+00:00"
    record = await (await admin_client.get(f"/api/devices/{device}", headers=admin_headers)).json()
    assert record["positionId"] == latest["id"]
    everything = await (
        await admin_client.get("/api/positions", params={"from": "2026-01-01T00:00:00Z"}, headers=admin_headers)
    ).json()
    assert len(everything) == 2  # the late one is stored all the same
    await redis.flushdb()  # cache gone (e.g. Redis lost): the API falls back to the database
    [from_database] = await (await admin_client.get("/api/positions", headers=admin_headers)).json()
    assert from_database["id"] == latest["id"]


async def test_the_live_cache_only_moves_forward_per_device(redis: ArqRedis) -> None:
    """A drainer that lost its lock may publish late: whatever it holds must not replace a newer entry."""
    await live.publish_batch(redis, [(100.0, {"deviceId": 1, "n": "a"}), (100.0, {"deviceId": 2, "n": "b"})], [], {})
    # One batch: device 1 forward, device 2 backward, device 3 new.
    await live.publish_batch(
        redis,
        [(150.0, {"deviceId": 1, "n": "c"}), (50.0, {"deviceId": 2, "n": "d"}), (10.0, {"deviceId": 3, "n": "e"})],
        [],
        {},
    )
    assert [p["n"] for p in await live.latest_positions(redis, [1, 2, 3])] == ["c", "b", "e"]


async def test_statistics_are_computed_by_the_database(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A minute apart, 10 kn then 20 kn then standing: the odometer's advance (the steps after the
    range's first position; a late one adds none), the top speed, the mean speed while moving, and the
    time from each moving fix to the next."""
    device = await add_device(sessions, "summed")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # The third position came late, after the device had run on to 50 km: stored with no distance.
    steps, odometers = [500.0, 111.32, 0.0, 111.32], [1000.0, 1111.32, 50_000.0, 1222.64]
    speeds = [10.0, 20.0, 0.0, 0.0]
    async with sessions() as session:
        for minute, (step, odometer, speed) in enumerate(zip(steps, odometers, speeds, strict=True)):
            session.add(
                Position(
                    device_id=device,
                    fix_time=start + timedelta(minutes=minute),
                    server_time=start,
                    latitude=10.0,
                    longitude=20.0,
                    speed=speed,
                    attributes={"distance": step, "totalDistance": odometer},
                )
            )
        await session.commit()
        stats = await summarise(session, device, start, start + timedelta(hours=1), 0.01)
        empty = await summarise(session, device, start - timedelta(days=1), start - timedelta(hours=1), 0.01)
    assert stats == {
        "positions": 4,
        "distance": 222.64,
        "maxSpeed": 20.0,
        "averageSpeed": 15.0,
        "movingTime": 120.0,
    }
    assert empty == {"positions": 0, "distance": 0.0, "maxSpeed": 0.0, "averageSpeed": 0.0, "movingTime": 0.0}


async def test_statistics_endpoint(
    settings: Settings, admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "stats")
    body = [position(device, second * 60, speed=10.0 * (second % 2)) for second in range(5)]
    await admin_client.post("/api/positions", json=body, headers=admin_headers)
    await run_burst(settings, POSITIONS)
    response = await admin_client.get(
        f"/api/devices/{device}/statistics",
        params={"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00Z"},
        headers=admin_headers,
    )
    assert response.status == 200
    stats = await response.json()
    assert stats["range"]["positions"] == 5
    assert stats["range"]["maxSpeed"] == 10.0
    assert stats["range"]["movingTime"] == 120.0
    assert stats["today"]["positions"] == 0  # 2026-01-01 is not today
    bad = await admin_client.get(
        f"/api/devices/{device}/statistics", params={"from": "2026-01-01T00:00:00Z"}, headers=admin_headers
    )
    assert bad.status == 400
    too_long = await admin_client.get(
        f"/api/devices/{device}/statistics",
        params={"from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=admin_headers,
    )
    assert too_long.status == 400
    assert (await too_long.json())["error"]["message"].startswith("to:")
    assert (await admin_client.get("/api/devices/999999/statistics", headers=admin_headers)).status == 404


def test_status_thresholds() -> None:
    assert status_after_silence(30, 600, 3600) == "online"
    assert status_after_silence(600, 600, 3600) == "unknown"
    assert status_after_silence(7200, 600, 3600) == "offline"


async def test_silent_devices_go_unknown_then_offline(sessions: async_sessionmaker[AsyncSession]) -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    async with transaction(sessions) as session:
        session.add_all(
            [
                Device(unique_id="fresh", name="fresh", status="online", last_update=now - timedelta(seconds=30)),
                Device(unique_id="quiet", name="quiet", status="online", last_update=now - timedelta(minutes=20)),
                Device(unique_id="gone", name="gone", status="unknown", last_update=now - timedelta(hours=2)),
                Device(
                    unique_id="patient",
                    name="patient",
                    status="online",
                    last_update=now - timedelta(minutes=20),
                    attributes={"unknownAfter": 3600},
                ),
            ]
        )
    async with transaction(sessions) as session:
        changes = await refresh_statuses(session, now, 600, 3600)
    assert sorted((change["uniqueId"], change["status"]) for change in changes) == [
        ("gone", "offline"),
        ("quiet", "unknown"),
    ]
    async with sessions() as session:
        again = await refresh_statuses(session, now, 600, 3600)
    assert again == []


async def test_sweep_job_runs_on_the_real_worker(settings: Settings, redis: ArqRedis) -> None:
    from tracker_jobs.jobs.base import enqueue

    job = await enqueue(redis, JOBS["sweep_position_partitions"])
    assert job is not None
    await run_burst(settings, POSITIONS)
    assert (await job.result(timeout=5)) == {"scheduled": [], "statusChanges": 0, "events": 0}
    await asyncio.sleep(0)


async def test_the_sweep_stores_status_and_inactivity_events_once(
    settings: Settings, redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    from tracker_jobs.events.models import Event
    from tracker_jobs.jobs.base import enqueue

    now = datetime.now(UTC)
    async with transaction(sessions) as session:
        quiet = Device(unique_id="quiet-sweep", name="quiet", status="online", last_update=now - timedelta(minutes=20))
        gone = Device(unique_id="gone-sweep", name="gone", status="unknown", last_update=now - timedelta(hours=3))
        idle = Device(
            unique_id="idle-sweep",
            name="idle",
            status="offline",
            last_update=now - timedelta(seconds=1250),
            attributes={"inactivityStart": 600, "inactivityPeriod": 300},
        )
        session.add_all([quiet, gone, idle])
    for _ in range(2):  # a second sweep finds nothing new to say
        await enqueue(redis, JOBS["sweep_position_partitions"])
        await run_burst(settings, POSITIONS)
    async with sessions() as session:
        found = (await session.execute(select(Event).order_by(col(Event.type)))).scalars().all()
    assert [(event.type, event.device_id) for event in found] == [
        ("deviceInactive", idle.id),
        ("deviceOffline", gone.id),
        ("deviceUnknown", quiet.id),
    ]
    # Inactive since 600 s after its last report, again every 300 s: the newest such time, 1,200 s.
    assert idle.last_update is not None
    assert found[0].event_time == idle.last_update + timedelta(seconds=1200)
