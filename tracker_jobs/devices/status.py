"""Online, unknown, offline: a device is online while it reports, unknown once it has been silent
for a while, offline after longer. Thresholds are settings, overridable per device in its attributes
(`unknownAfter`, `offlineAfter`, seconds)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from tracker_jobs.devices.models import Device, DeviceStatus
from tracker_jobs.devices.service import device_to_api


def status_after_silence(silent_s: float, unknown_after_s: float, offline_after_s: float) -> str:
    if silent_s >= offline_after_s:
        return DeviceStatus.OFFLINE
    if silent_s >= unknown_after_s:
        return DeviceStatus.UNKNOWN
    return DeviceStatus.ONLINE


def _threshold(attributes: dict[str, Any], name: str, default: int) -> float:
    value = attributes.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else default


_DEVICES: sa.Table = Device.__table__  # type: ignore[attr-defined]
# Only where the device is still as silent as we saw it: a position may have arrived meanwhile.
_SET_STATUS = (
    sa.update(_DEVICES)
    .where(_DEVICES.c.id == sa.bindparam("b_id"), _DEVICES.c.last_update == sa.bindparam("b_seen"))
    .values(status=sa.bindparam("b_status"))
)


async def refresh_statuses(
    session: AsyncSession,
    now: datetime,
    unknown_after_s: int,
    offline_after_s: int,
    device_ids: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Move silent devices to unknown, then offline; return the devices that changed (API shape)."""
    query = select(Device).where(col(Device.status) != DeviceStatus.OFFLINE, col(Device.last_update).is_not(None))
    if device_ids is not None:
        query = select(Device).where(col(Device.id).in_(device_ids), col(Device.last_update).is_not(None))
    changes: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for device in (await session.execute(query)).scalars():
        assert device.last_update is not None
        status = status_after_silence(
            (now - device.last_update).total_seconds(),
            _threshold(device.attributes, "unknownAfter", unknown_after_s),
            _threshold(device.attributes, "offlineAfter", offline_after_s),
        )
        if status != device.status:
            updates.append({"b_id": device.id, "b_seen": device.last_update, "b_status": status})
            changes.append({**device_to_api(device), "status": status})
    if updates:
        await session.execute(_SET_STATUS, updates)
    return changes
