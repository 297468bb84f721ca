"""The seed's notification jobs, as plain functions: each records the event it names (once per
device, type, time and subject, as detected events are), writes the deliveries it owes and sends
them now; the API's /api/tasks/notification/* endpoints enqueue two of them for the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.core.db import transaction
from tracker_jobs.core.errors import not_found
from tracker_jobs.core.fields import parse_time
from tracker_jobs.core.principal import Principal
from tracker_jobs.devices.models import Device, DeviceMaintenance, Maintenance
from tracker_jobs.devices.service import get_device
from tracker_jobs.events.service import get_geofence
from tracker_jobs.events.store import Recorded, record_events
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import SEND_DEVICE_OFFLINE_ALERT, SEND_GEOFENCE_ALERT, JobRef
from tracker_jobs.notifications.schemas import AlertTask, OfflineTask

# Makes the event row for a device, inside the recording transaction.
RowFor = Callable[[AsyncSession, Device], Awaitable[dict[str, Any]]]


def event_row(
    event_type: str, device: Device, now: datetime, position_data: dict[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    """An event row for `device` at the position given (its fixTime, or now; its place, or the
    device's last known one is left to the event's position)."""
    data = position_data or {}
    when = parse_time("position_data.fixTime", data["fixTime"]) if data.get("fixTime") is not None else now
    return {
        "type": event_type,
        "device_id": device.id,
        "event_time": when,
        "position_id": None if data else device.position_id,
        "latitude": data.get("latitude"),
        "longitude": data.get("longitude"),
        **more,
    }


async def record_alert(
    sessions: async_sessionmaker[AsyncSession], row_for: RowFor, device_id: int, now: datetime, max_age_s: float
) -> Recorded:
    """Record the event `row_for(session, device)` makes for the device; NotFound for an unknown one."""
    async with transaction(sessions) as session:
        device = await session.get(Device, device_id)
        if device is None:
            raise not_found(f"device {device_id}")
        row = await row_for(session, device)
        return await record_events(session, [row], now, max_age_s)


def geofence_alert(geofence_id: int, event_type: str, position_data: dict[str, Any] | None, now: datetime) -> RowFor:
    async def row_for(session: AsyncSession, device: Device) -> dict[str, Any]:
        kind = {"enter": "geofenceEnter", "exit": "geofenceExit"}[event_type]
        return event_row(kind, device, now, position_data, geofence_id=geofence_id, subject=geofence_id)

    return row_for


def offline_alert(offline_duration_minutes: int, now: datetime) -> RowFor:
    async def row_for(session: AsyncSession, device: Device) -> dict[str, Any]:
        return event_row("deviceOffline", device, now, attributes={"offlineMinutes": offline_duration_minutes})

    return row_for


def speed_alert(speed: float, speed_limit: float, position_data: dict[str, Any] | None, now: datetime) -> RowFor:
    async def row_for(session: AsyncSession, device: Device) -> dict[str, Any]:
        attributes = {"speed": speed, "speedLimit": speed_limit}
        return event_row("deviceOverspeed", device, now, position_data, attributes=attributes)

    return row_for


def maintenance_reminder(maintenance_id: int, now: datetime) -> RowFor:
    async def row_for(session: AsyncSession, device: Device) -> dict[str, Any]:
        item = await session.get(Maintenance, maintenance_id)
        if item is None or await session.get(DeviceMaintenance, (device.id, maintenance_id)) is None:
            raise not_found(f"maintenance {maintenance_id} of device {device.id}")
        attributes = {"name": item.name, "type": item.type}
        return event_row(
            "maintenance", device, now, maintenance_id=maintenance_id, subject=maintenance_id, attributes=attributes
        )

    return row_for


async def _enqueue_for(redis: ArqRedis, caller: Principal, ref: JobRef, **arguments: Any) -> str:
    job = await enqueue(redis, ref, user_id=caller.user_id, **arguments)
    assert job is not None  # no job id is given, so none can exist already
    return job.job_id


async def _check_device(session: AsyncSession, caller: Principal, device_id: int) -> None:
    if await get_device(session, caller, device_id) is None:
        raise not_found(f"device {device_id}")


async def enqueue_geofence_alert(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], caller: Principal, body: AlertTask
) -> str:
    async with sessions() as session:
        await _check_device(session, caller, body.device_id)
        await get_geofence(session, caller, body.geofence_id)
    position = body.position_data.given()
    if "fixTime" in position:
        position["fixTime"] = position["fixTime"].isoformat()
    arguments = {"geofence_id": body.geofence_id, "event_type": body.event_type, "position_data": position}
    return await _enqueue_for(redis, caller, SEND_GEOFENCE_ALERT, device_id=body.device_id, **arguments)


async def enqueue_device_offline_alert(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], caller: Principal, body: OfflineTask
) -> str:
    async with sessions() as session:
        await _check_device(session, caller, body.device_id)
    minutes = body.offline_duration_minutes
    return await _enqueue_for(
        redis, caller, SEND_DEVICE_OFFLINE_ALERT, device_id=body.device_id, offline_duration_minutes=minutes
    )
