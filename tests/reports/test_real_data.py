"""A bus that reports no speed and no bearing, through the real batch API, pipeline and worker: the
answers a fleet manager reads (speeds, motion, moving time, trips) are believable, and the device
statistics and the summary report agree on the distance."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.factories import add_device
from tests.support.traces import Trace, at
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.jobs.refs import POSITIONS

Client = TestClient[Any, Any]
START = at("2026-03-02T06:00:00+00:00")
RANGE = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-03T00:00:00Z"}


# A parked phone's fixes wander a few metres: no motion, no speed.
JITTER = ((0.0, 0.0), (3.0, -4.0), (-2.0, 3.0), (4.0, 1.0))


def bus_without_speed() -> Trace:
    trace = Trace(START)
    trace.park(20, jitter_m=JITTER)  # ten minutes at the depot
    trace.drive(20, step_m=300)  # 6 km at ~19.4 kn
    trace.park(14, jitter_m=JITTER)  # a seven-minute layover at the terminus
    trace.drive(20, step_m=-300)  # and back
    trace.park(20, jitter_m=JITTER)
    return trace


async def test_a_bus_without_speed_gets_believable_answers(
    settings: Settings, admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bus = await add_device(sessions, "bus-no-speed")
    trace = bus_without_speed()
    body = [
        {"deviceId": bus, "fixTime": fix.fix_time.isoformat(), "latitude": fix.latitude, "longitude": fix.longitude}
        for fix in trace.fixes
    ]
    answer = await admin_client.post("/api/positions", json=body, headers=admin_headers)
    assert (await answer.json())["accepted"] == len(body)
    await run_burst(settings, POSITIONS)

    query = {"deviceId": str(bus), **RANGE, "limit": "1000"}
    positions = await (await admin_client.get("/api/positions", params=query, headers=admin_headers)).json()
    assert len(positions) == len(body)
    assert all(position["attributes"]["speedComputed"] for position in positions)
    driving = positions[25]  # mid-way out, heading east
    assert driving["speed"] == pytest.approx(300 / 30 * 3600 / 1852, rel=1e-2)
    assert driving["course"] == pytest.approx(90.0, abs=0.5)
    assert driving["attributes"]["motion"] is True
    parked = positions[1:20] + positions[41:54]
    assert {position["speed"] for position in parked} == {0.0}
    assert not any(position["attributes"]["motion"] for position in parked)

    stats = await admin_client.get(f"/api/devices/{bus}/statistics", params=RANGE, headers=admin_headers)
    statistics = (await stats.json())["range"]
    assert statistics["maxSpeed"] == pytest.approx(300 / 30 * 3600 / 1852, rel=1e-2)
    assert 0 < statistics["averageSpeed"] <= statistics["maxSpeed"]
    assert statistics["movingTime"] == pytest.approx(40 * 30, abs=60)

    direct = {"deviceId": str(bus), **RANGE}
    [summary] = await (await admin_client.get("/api/reports/summary", params=direct, headers=admin_headers)).json()
    assert summary["maxSpeed"] == pytest.approx(statistics["maxSpeed"])
    assert 0 < summary["averageSpeed"] < summary["maxSpeed"]
    # The same metres; the stored per-position distances are rounded to centimetres.
    assert summary["distance"] == pytest.approx(statistics["distance"], abs=0.01 * len(body))
    assert summary["drivingDistance"] == pytest.approx(12_000, rel=2e-2)
    trips = await (await admin_client.get("/api/reports/trips", params=direct, headers=admin_headers)).json()
    assert [round(trip["distance"] / 1000) for trip in trips] == [6, 6]


async def test_positions_are_read_back_by_the_devices_unique_id(
    settings: Settings, admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    bus = await add_device(sessions, "phone-by-unique-id")
    fix = {"deviceId": bus, "fixTime": "2026-03-02T06:00:00Z", "latitude": 52.5, "longitude": 13.4}
    await admin_client.post("/api/positions", json=[fix], headers=admin_headers)
    await run_burst(settings, POSITIONS)
    newest = await admin_client.get("/api/positions", params={"uniqueId": "phone-by-unique-id"}, headers=admin_headers)
    assert [position["deviceId"] for position in await newest.json()] == [bus]
    in_range = {"uniqueId": "phone-by-unique-id", **RANGE}
    ranged = await admin_client.get("/api/positions", params=in_range, headers=admin_headers)
    assert [position["latitude"] for position in await ranged.json()] == [52.5]
    unknown = await admin_client.get("/api/positions", params={"uniqueId": "no-such-phone"}, headers=admin_headers)
    assert unknown.status == 404
    assert "no-such-phone" in (await unknown.json())["error"]["message"]
