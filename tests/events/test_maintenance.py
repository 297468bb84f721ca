"""Maintenance by calendar date (found by the sweep) and `lead` reminders (by date, and by a value the
positions carry): refused when the lead is not within the period, each crossing stored once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.client import error_of
from tests.support.factories import add_device, add_maintenance
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction
from tracker_jobs.core.errors import FieldError
from tracker_jobs.devices.models import Device, Maintenance
from tracker_jobs.events.models import Event
from tracker_jobs.events.service import update_maintenance
from tracker_jobs.events.status import maintenance_date_events
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import JOBS, POSITIONS
from tracker_jobs.positions.detectors import DetectMaintenance, DetectMaintenanceReminders, MaintenanceItem
from tracker_jobs.positions.pipeline import Batch, DeviceState, PipelineConfig, StepResult
from tracker_jobs.positions.record import PositionRecord
from tracker_jobs.positions.service import store_batch

Client = TestClient[Any, Any]
T0 = 1_767_225_600.0
DAY = 86_400.0


def at(second: float, device: int = 1, **attributes: Any) -> PositionRecord:
    return PositionRecord(
        device_id=device,
        fix_time=T0 + second,
        latitude=52.0 + second * 1e-4,  # 0.001 degree (111 m) every 10 s
        longitude=13.0,
        speed=20.0,
        attributes=attributes,
    )


async def _maintenance_events(sessions: async_sessionmaker[AsyncSession], device: int) -> list[Event]:
    async with sessions() as session:
        query = select(Event).where(col(Event.device_id) == device, col(Event.type) == "maintenance")
        return list((await session.execute(query.order_by(col(Event.event_time)))).scalars())


# -- the API refuses a lead that is not within the period ------------------------------------------


async def test_a_lead_must_be_more_than_zero_and_less_than_the_period(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "serviced")
    item = {"deviceId": device, "name": "Oil", "type": "totalDistance", "start": 0, "period": 10_000}
    for lead, problem in [
        (10_000, "attributes.lead: must be less than the period (10000)"),
        (20_000, "attributes.lead: must be less than the period"),
        (0, "attributes.lead: must be a number more than 0"),
        (-5, "attributes.lead: must be a number more than 0"),
        (True, "attributes.lead: must be a number more than 0"),
        ("500", "attributes.lead: must be a number more than 0"),
    ]:
        response = await admin_client.post(
            "/api/maintenance", json={**item, "attributes": {"lead": lead}}, headers=admin_headers
        )
        assert response.status == 400, lead
        assert (await error_of(response))["message"].startswith(problem), lead
    created = await admin_client.post(
        "/api/maintenance", json={**item, "attributes": {"lead": 500}}, headers=admin_headers
    )
    assert created.status == 201
    body = await created.json()
    assert body["attributes"] == {"lead": 500}
    # A change that sets both is checked against itself.
    changed = await admin_client.put(
        f"/api/maintenance/{body['id']}", json={"period": 400, "attributes": {"lead": 500}}, headers=admin_headers
    )
    assert changed.status == 400
    assert (await error_of(changed))["message"].startswith("attributes.lead: must be less than the period (400)")
    # A calendar item: start in epoch seconds, period and lead in seconds.
    dated = {"deviceId": device, "name": "Inspection", "type": "date", "start": T0, "period": 365 * DAY}
    response = await admin_client.post(
        "/api/maintenance", json={**dated, "attributes": {"lead": 30 * DAY}}, headers=admin_headers
    )
    assert response.status == 201


def test_a_change_to_the_period_alone_is_checked_against_the_stored_lead() -> None:
    item = Maintenance(device_id=1, name="Oil", type="hours", start=0, period=500, attributes={"lead": 50})
    assert update_maintenance(item, {"period": 100}).period == 100
    with pytest.raises(FieldError) as refused:
        update_maintenance(item, {"period": 40})
    assert refused.value.field == "attributes.lead"


# -- a value the positions carry: a reminder lead before each due point -----------------------------


def _run(step: Any, rows: list[PositionRecord], stored_hours: float) -> StepResult:
    state = DeviceState(
        fix_time=T0 - 10, latitude=52.0, longitude=13.0, odometer=0.0, attributes={"hours": stored_hours}
    )
    result: StepResult = step(Batch.from_rows(rows, {1: state}, T0 + 3600), PipelineConfig())
    return result


def test_a_reminder_each_time_the_value_passes_a_due_point_less_the_lead() -> None:
    item = MaintenanceItem(5, 1, "Oil", "hours", start=100.0, period=50.0, lead=10.0)
    # 90 (reminder for 100), 100 (due), 140 (reminder for 150), 151 (due), then 185 -> 205: both the
    # reminder for 200 and the due point 200 in one step: its due event only.
    hours = [85, 90, 99, 100, 139, 140, 151, 185, 205]
    rows = [at(10 * i, hours=h) for i, h in enumerate(hours)]
    reminders = _run(DetectMaintenanceReminders((item,)), rows, stored_hours=80)
    (found,) = reminders.events
    assert found.rows.tolist() == [1, 5]
    assert found.attributes == [
        {"name": "Oil", "type": "hours", "due": 100.0, "reminder": True, "lead": 10.0},
        {"name": "Oil", "type": "hours", "due": 150.0, "reminder": True, "lead": 10.0},
    ]
    assert found.subject is not None
    assert found.subject.tolist() == [5, 5]  # the item's id: maintenanceId names it
    (due,) = _run(DetectMaintenance((item,)), rows, stored_hours=80).events
    assert due.rows.tolist() == [3, 6, 8]  # never a row of a reminder: both are stored
    # A date item is the sweep's: nothing from positions.
    dated = MaintenanceItem(6, 1, "Inspection", "date", start=0.0, period=100.0, lead=10.0)
    assert _run(DetectMaintenanceReminders((dated,)), [at(0, date=95)], stored_hours=0).events == ()


async def test_odometer_reminders_and_due_events_through_the_store(sessions: async_sessionmaker[AsyncSession]) -> None:
    device = await add_device(sessions, "serviced")
    item = await add_maintenance(
        sessions, device, name="Tyres", type="totalDistance", start=1000.0, period=1000.0, attributes={"lead": 300}
    )
    track = [at(10 * i, device) for i in range(30)]  # 111 m every 10 s: 3.2 km
    first = await store_batch(sessions, track[:15], PipelineConfig(), T0 + 7200)
    second = await store_batch(sessions, track[15:], PipelineConfig(), T0 + 7200)
    again = await store_batch(sessions, track, PipelineConfig(), T0 + 7200)
    assert again.events == 0
    assert first.events + second.events >= 6
    found = [
        (event.maintenance_id, event.subject, event.attributes["due"], bool(event.attributes.get("reminder")))
        for event in await _maintenance_events(sessions, device)
    ]
    assert found == [
        (item.id, item.id, 1000.0, True),  # at 700 m
        (item.id, item.id, 1000.0, False),
        (item.id, item.id, 2000.0, True),
        (item.id, item.id, 2000.0, False),
        (item.id, item.id, 3000.0, True),
        (item.id, item.id, 3000.0, False),
    ]


# -- by calendar date: the sweep -------------------------------------------------------------------


async def test_the_sweep_finds_the_newest_due_date_and_the_reminder_before_the_next(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    clock = now.timestamp()
    van = await add_device(sessions, "van")
    week = 7 * DAY
    # Due at now - 10 d, now - 3 d, now + 4 d: the newest passed, and 5 days ahead of the next, now - 1 d.
    oil = await add_maintenance(
        sessions, van, name="Oil", type="date", start=clock - 10 * DAY, period=week, attributes={"lead": 5 * DAY}
    )
    # Its reminder would be 2 days before now + 4 d: not yet.
    tyres = await add_maintenance(
        sessions, van, name="Tyres", type="date", start=clock - 10 * DAY, period=week, attributes={"lead": 2 * DAY}
    )
    # Not due before tomorrow, reminded 2 days ahead: since yesterday.
    first = await add_maintenance(
        sessions, van, name="First", type="date", start=clock + DAY, period=week, attributes={"lead": 2 * DAY}
    )
    # A lead not within the period is no lead; a value item is the positions'.
    await add_maintenance(
        sessions, van, name="Odd", type="date", start=clock + DAY, period=DAY, attributes={"lead": 3 * DAY}
    )
    await add_maintenance(sessions, van, name="Km", type="totalDistance", start=0, period=1000, attributes={"lead": 10})
    idle = await add_device(sessions, "idle")
    async with transaction(sessions) as session:
        disabled = await session.get(Device, idle)
        assert disabled is not None
        disabled.disabled = True
    await add_maintenance(sessions, idle, name="Oil", type="date", start=clock - DAY, period=week)
    async with sessions() as session:
        found = await maintenance_date_events(session, now)
    shown = sorted(
        (
            row["maintenance_id"],
            row["event_time"] - now,
            row["attributes"].get("reminder", False),
            row["attributes"]["due"],
        )
        for row in found
    )
    assert shown == sorted(
        [
            (oil.id, timedelta(days=-3), False, clock - 3 * DAY),
            (oil.id, timedelta(days=-1), True, clock + 4 * DAY),
            (tyres.id, timedelta(days=-3), False, clock - 3 * DAY),
            (first.id, timedelta(days=-1), True, clock + DAY),
        ]
    )
    assert all(row["subject"] == row["maintenance_id"] and row["type"] == "maintenance" for row in found)


async def test_the_real_sweep_stores_each_date_and_reminder_once(
    settings: Settings, redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    van = await add_device(sessions, "van")
    start = now.timestamp() - 10 * DAY
    item = await add_maintenance(
        sessions, van, name="Inspection", type="date", start=start, period=7 * DAY, attributes={"lead": 5 * DAY}
    )
    for _ in range(2):  # a second sweep finds the same times: stored once
        await enqueue(redis, JOBS["sweep_position_partitions"])
        await run_burst(settings, POSITIONS)
    events = await _maintenance_events(sessions, van)
    assert [(e.maintenance_id, e.subject, e.attributes.get("reminder", False)) for e in events] == [
        (item.id, item.id, False),
        (item.id, item.id, True),
    ]
    due, reminder = events
    assert due.event_time == now - timedelta(days=3)
    assert reminder.event_time == now - timedelta(days=1)
    assert reminder.attributes["due"] == (now + timedelta(days=4)).timestamp()
