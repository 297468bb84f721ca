"""A small fleet in the database: Ann's van (a trip between two stops) and truck (parked), Bob's bus."""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.reports.traces import Trace, at
from tests.test_admin_api import make_user
from tracker_jobs.core.db import insert_ignoring_duplicates, transaction
from tracker_jobs.devices.models import Device, UserDevice
from tracker_jobs.events.models import Event
from tracker_jobs.positions.models import Position
from tracker_jobs.reports.sections import SECTION_COLUMNS

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

    def expected_stops(self) -> list[dict[str, Any]]:
        trace = self.traces[self.van]
        return [trace.expected_stop(stop[0], stop[-1], self.van, "van") for stop in self.stops]


def odometer(position_id: int) -> float:
    return 10.0 * position_id


async def add_device(sessions: async_sessionmaker[AsyncSession], name: str, owner: int) -> int:
    async with transaction(sessions) as session:
        device = Device(unique_id=name, name=name)
        session.add(device)
        await session.flush()
        assert device.id is not None
        session.add(UserDevice(user_id=owner, device_id=device.id))
        return device.id


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


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the JSON export writes it."""
    return orjson.loads(orjson.dumps(row))


def csv_sections(content: bytes, sections: list[str]) -> dict[str, list[dict[str, str]]]:
    """A CSV export read back: one file, or a zip of one per section."""
    if len(sections) == 1:
        return {sections[0]: list(csv.DictReader(io.StringIO(content.decode())))}
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.namelist() == [f"{name}.csv" for name in sections]
        return {name: list(csv.DictReader(io.StringIO(archive.read(f"{name}.csv").decode()))) for name in sections}


def csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def assert_csv_matches(content: bytes, document: dict[str, Any]) -> None:
    sections = document["report"]["sections"]
    for name, rows in csv_sections(content, sections).items():
        names = [column.name for column in SECTION_COLUMNS[name]]
        assert rows == [{key: csv_text(row.get(key)) for key in names} for row in document[name]]


def assert_xlsx_matches(content: bytes, document: dict[str, Any], timezone: str = "UTC") -> None:
    workbook = load_workbook(io.BytesIO(content), read_only=True)
    assert workbook.sheetnames == document["report"]["sections"]
    for name in workbook.sheetnames:
        columns = SECTION_COLUMNS[name]
        header, *rows = list(workbook[name].iter_rows(values_only=True, max_col=len(columns)))
        assert list(header) == [column.name for column in columns]
        expected = [
            [_xlsx_expected(column.type, row.get(column.name), timezone) for column in columns]
            for row in document[name]
        ]
        # openpyxl writes 16 significant digits of a float.
        assert [list(row) for row in rows] == [
            [pytest.approx(value, rel=1e-15) if isinstance(value, float) else value for value in row]
            for row in expected
        ]
    workbook.close()


def _xlsx_expected(kind: str, value: Any, timezone: str) -> Any:
    if value is None:
        return None
    if kind == "time":
        return datetime.fromisoformat(value).astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    if kind == "json":
        return orjson.dumps(value).decode()
    return value
