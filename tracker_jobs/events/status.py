"""Events the sweep finds, with no position behind them: a device's status changing to unknown or
offline (so devices that report over HTTP do go offline, which Traccar's cannot), a device
inactive for its `inactivityStart` seconds, then again every `inactivityPeriod`, and maintenance items
of type `date` coming due by the calendar (and their `lead` reminders)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from tracker_jobs.devices.models import Device, DeviceMaintenance, Maintenance

STATUS_EVENTS = {"online": "deviceOnline", "unknown": "deviceUnknown", "offline": "deviceOffline"}
DATE = "date"  # a maintenance item due by the calendar: start in epoch seconds, period (and lead) in seconds


def status_events(changes: Iterable[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """An event per device whose status the sweep changed (`changes` in the API's device shape)."""
    return [
        {"type": STATUS_EVENTS[change["status"]], "device_id": change["id"], "event_time": now, "attributes": {}}
        for change in changes
    ]


def _seconds(attributes: Mapping[str, Any], name: str) -> float:
    value = attributes.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        return 0.0
    return float(value)


async def inactivity_events(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    """deviceInactive for each device silent for its `inactivityStart` seconds, at the time it became
    so, then at each `inactivityPeriod` after. The newest such time only: sweeps that run again find
    the same time, which is stored once."""
    start = sa.type_coerce(col(Device.attributes), sa.JSON())["inactivityStart"].as_float()
    found = await session.execute(
        select(Device).where(col(Device.last_update).is_not(None), start.is_not(None), col(Device.disabled).is_(False))
    )
    events = []
    for device in found.scalars():
        assert device.last_update is not None
        begin, period = _seconds(device.attributes, "inactivityStart"), _seconds(device.attributes, "inactivityPeriod")
        silent = (now - device.last_update).total_seconds()
        if not begin or silent < begin:
            continue
        repeats = math.floor((silent - begin) / period) if period else 0
        when = device.last_update + timedelta(seconds=begin + repeats * period)
        events.append(
            {
                "type": "deviceInactive",
                "device_id": device.id,
                "event_time": when,
                "position_id": device.position_id,
                "attributes": {"silentS": round((when - device.last_update).total_seconds())},
            }
        )
    return events


def lead_problem(attributes: Mapping[str, Any] | None, period: float | None) -> str | None:
    """What is wrong with a maintenance item's `attributes.lead` (None: nothing, or it sets none): a
    number more than 0 (in the item's unit: metres, hours, seconds for dates), and less than the period
    when that is known. The API refuses a bad one (events/schemas.py, events/service.py)."""
    if not attributes or "lead" not in attributes:
        return None
    lead = attributes["lead"]
    if isinstance(lead, bool) or not isinstance(lead, int | float) or not 0 < lead < math.inf:
        return "must be a number more than 0"
    if period is not None and not lead < period:
        return f"must be less than the period ({period:g})"
    return None


def maintenance_lead(attributes: Mapping[str, Any], period: float) -> float | None:
    """The item's lead when it sets a usable one (see lead_problem); None: no reminder."""
    if "lead" not in attributes or lead_problem(attributes, period) is not None:
        return None
    return float(attributes["lead"])


async def maintenance_date_events(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    """maintenance for each item of type `date` and each device not disabled it applies to: at start + k * period (epoch
    seconds), the newest such time passed, and, for an item with a `lead`, the reminder at due - lead
    while that due point is still ahead (`reminder` true, `due` the coming point). Each carries the
    item's id as its subject: sweeps that run again find the same times, which are stored once, and a
    reminder is never at a due point's time (0 < lead < period), so both are stored."""
    found = await session.execute(
        select(Maintenance, col(DeviceMaintenance.device_id), col(Device.position_id))
        .join(DeviceMaintenance, col(DeviceMaintenance.maintenance_id) == col(Maintenance.id))
        .join(Device, col(Device.id) == col(DeviceMaintenance.device_id))
        .where(col(Maintenance.type) == DATE, col(Maintenance.period) > 0, col(Device.disabled).is_(False))
    )
    clock = now.timestamp()
    events: list[dict[str, Any]] = []
    for item, device_id, position_id in found:
        base = {"name": item.name[:128], "type": DATE}
        if clock >= item.start:
            due = item.start + math.floor((clock - item.start) / item.period) * item.period
            events += _maintenance_event(item, device_id, position_id, due, base | {"due": due})
        lead = maintenance_lead(item.attributes, item.period)
        if lead is not None and clock >= item.start - lead:
            due = item.start + math.floor((clock - item.start + lead) / item.period) * item.period
            if due > clock:
                reminder = base | {"due": due, "reminder": True, "lead": lead}
                events += _maintenance_event(item, device_id, position_id, due - lead, reminder)
    return events


def _maintenance_event(
    item: Maintenance, device_id: int, position_id: int | None, when: float, attributes: dict[str, Any]
) -> list[dict[str, Any]]:
    """The event's row; none for a time past what a datetime holds (a start far beyond the calendar)."""
    try:
        event_time = datetime.fromtimestamp(when, UTC)
    except (OverflowError, ValueError, OSError):
        return []
    row = {
        "type": "maintenance",
        "device_id": device_id,
        "event_time": event_time,
        "position_id": position_id,
        "maintenance_id": item.id,
        "subject": item.id,
        "attributes": attributes,
    }
    return [row]
