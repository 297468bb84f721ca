"""A small fleet in the database: Ann's van (a trip between two stops) and truck (parked), Bob's bus;
the trips and stops the reports should find in it, and storing a made-up trace as positions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.traces import Trace, at
from tracker_jobs.core.db import insert_ignoring_duplicates, transaction
from tracker_jobs.events.models import Delivery, Event
from tracker_jobs.positions.models import Position

DAY = at("2026-03-02T00:00:00+00:00")
NEXT_DAY = DAY + timedelta(days=1)
JITTER = ((0.0, 0.0), (40.0, -30.0), (-25.0, 35.0))


@dataclass
class Fleet:
    ann: dict[str, str]  # request headers
    bob: dict[str, str]
    van: int
    truck: int
    bus: int
    traces: dict[int, Trace]
    trip: range  # the van's trip: departure .. arrival
    stops: list[range]

    def expected_trip(self) -> dict[str, Any]:
        trace = self.traces[self.van]
        row = trace.expected_trip(self.trip[0], self.trip[-1], self.van, "van")
        row["startOdometer"] = odometer(row["startPositionId"])
        row["endOdometer"] = odometer(row["endPositionId"])
        return row

    def distance(self, device_id: int) -> float:
        """Every metre the device moved in the trace (parked jitter too): the summary's `distance`."""
        trace = self.traces[device_id]
        return trace.road_m(0, len(trace.fixes) - 1)

    def expected_stops(self) -> list[dict[str, Any]]:
        trace = self.traces[self.van]
        return [trace.expected_stop(stop[0], stop[-1], self.van, "van") for stop in self.stops]


def odometer(position_id: int) -> float:
    return 10.0 * position_id


async def store_trace(sessions: async_sessionmaker[AsyncSession], device_id: int, trace: Trace) -> None:
    rows = [
        {
            "id": fix.position_id,
            "device_id": device_id,
            "protocol": "osmand",
            "fix_time": fix.fix_time,
            "server_time": fix.fix_time,
            "latitude": fix.latitude,
            "longitude": fix.longitude,
            "altitude": 0.0,
            "speed": fix.speed,
            "course": 0.0,
            "accuracy": 0.0,
            "valid": True,
            "attributes": {"totalDistance": odometer(fix.position_id)},
        }
        for fix in trace.fixes
    ]
    # Newest first, as late positions are stored after newer ones: reports must order them by fix time.
    async with transaction(sessions) as session:
        await insert_ignoring_duplicates(session, Position.__table__, rows[::-1])  # type: ignore[attr-defined]


async def add_event(sessions: async_sessionmaker[AsyncSession], device_id: int, kind: str, when: datetime) -> None:
    async with transaction(sessions) as session:
        session.add(Event(type=kind, device_id=device_id, event_time=when, attributes={"speed": 70.5}))


async def add_delivery(
    sessions: async_sessionmaker[AsyncSession], user_id: int, device_id: int, when: datetime
) -> None:
    """A sent web delivery made at `when`."""
    async with transaction(sessions) as session:
        session.add(
            Delivery(
                user_id=user_id,
                channel="web",
                state="sent",
                event_type="deviceOverspeed",
                device_id=device_id,
                event_time=when,
                created_at=when,
                next_attempt_at=when,
                sent_at=when,
            )
        )
