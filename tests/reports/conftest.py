"""Fixtures of the report tests: a small fleet in the database (tests/support/fleet.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.factories import add_device, make_user
from tests.support.fleet import DAY, JITTER, Fleet, add_event, store_trace
from tests.support.traces import Trace


@pytest.fixture
async def fleet(sessions: async_sessionmaker[AsyncSession]) -> Fleet:
    ann = await make_user(sessions, "ann@example.com", token="ann-token")
    bob = await make_user(sessions, "bob@example.com", token="bob-token")
    van, truck = await add_device(sessions, "van", ann), await add_device(sessions, "truck", ann)
    bus = await add_device(sessions, "bus", bob)
    van_trace = Trace(DAY + timedelta(hours=8), first_id=1000)
    home = van_trace.park(20, jitter_m=JITTER)
    road = van_trace.drive(12, step_m=450)
    work = van_trace.park(30, jitter_m=JITTER)
    truck_trace = Trace(DAY + timedelta(hours=6), first_id=2000, origin=(48.1, 11.5))
    truck_trace.park(100, jitter_m=JITTER)
    bus_trace = Trace(DAY + timedelta(hours=9), first_id=3000, origin=(50.0, 8.6))
    bus_trace.drive(10, step_m=500)
    bus_trace.park(10)
    traces = {van: van_trace, truck: truck_trace, bus: bus_trace}
    for device_id, trace in traces.items():
        await store_trace(sessions, device_id, trace)
    await add_event(sessions, van, "geofenceEnter", DAY + timedelta(hours=8, minutes=5))
    await add_event(sessions, van, "deviceOverspeed", DAY + timedelta(hours=8, minutes=12))
    await add_event(sessions, bus, "deviceOverspeed", DAY + timedelta(hours=9, minutes=1))
    return Fleet(
        ann={"Authorization": "Bearer ann-token"},
        bob={"Authorization": "Bearer bob-token"},
        van=van,
        truck=truck,
        bus=bus,
        traces=traces,
        trip=range(home[-1], road[-1] + 1),
        stops=[home, range(road[-1], work[-1] + 1)],
    )
