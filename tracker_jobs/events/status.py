"""Events the sweep finds, with no position behind them: a device's status changing to unknown or
offline (so devices that report over HTTP do go offline, which Traccar's cannot), and a device
inactive for its `inactivityStart` seconds, then again every `inactivityPeriod`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from tracker_jobs.devices.models import Device

STATUS_EVENTS = {"online": "deviceOnline", "unknown": "deviceUnknown", "offline": "deviceOffline"}


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
