"""Geofences: create, read, change, delete those the caller may see, and link them to devices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col, select
from sqlmodel.sql.expression import SelectOfScalar

from tracker_jobs.core.db import iso
from tracker_jobs.core.errors import FieldError, Forbidden, not_found
from tracker_jobs.core.principal import Principal
from tracker_jobs.devices.models import DeviceMaintenance, Maintenance
from tracker_jobs.devices.service import get_device, visible_device_ids
from tracker_jobs.events.geofences import hysteresis_m, parse_area
from tracker_jobs.events.models import (
    DeviceGeofence,
    DeviceNotification,
    Event,
    Geofence,
    Notification,
    UserGeofence,
    UserNotification,
)
from tracker_jobs.events.status import lead_problem
from tracker_jobs.users.models import User


def visible_geofences(principal: Principal) -> SelectOfScalar[Geofence]:
    """Every geofence for an admin; those linked to the user otherwise."""
    query = select(Geofence)
    if not principal.is_admin:
        mine = select(col(UserGeofence.geofence_id)).where(col(UserGeofence.user_id) == principal.user_id)
        query = query.where(col(Geofence.id).in_(mine))
    return query


async def list_geofences(session: AsyncSession, principal: Principal) -> list[Geofence]:
    return list((await session.execute(visible_geofences(principal).order_by(col(Geofence.id)))).scalars())


async def get_geofence(session: AsyncSession, principal: Principal, geofence_id: int) -> Geofence:
    """The geofence, if the caller may see it; NotFound otherwise (unknown and not visible look alike)."""
    query = visible_geofences(principal).where(col(Geofence.id) == geofence_id)
    found: Geofence | None = (await session.execute(query)).scalar_one_or_none()
    if found is None:
        raise not_found(f"geofence {geofence_id}")
    return found


async def create_geofence(session: AsyncSession, principal: Principal, fields: dict[str, Any]) -> Geofence:
    parse_area(fields["area"], fields.get("attributes"))  # a FieldError naming what is wrong
    hysteresis_m(fields.get("attributes"))
    geofence = Geofence(**fields)
    session.add(geofence)
    await session.flush()
    assert geofence.id is not None
    if not principal.is_admin:
        session.add(UserGeofence(user_id=principal.user_id, geofence_id=geofence.id))
    return geofence


async def update_geofence(session: AsyncSession, geofence: Geofence, fields: dict[str, Any]) -> Geofence:
    """Change it; a new area or attributes is checked, and moves the revision on, so workers parse it again."""
    if "area" in fields or "attributes" in fields:
        parse_area(fields.get("area", geofence.area), fields.get("attributes", geofence.attributes))
        hysteresis_m(fields.get("attributes", geofence.attributes))
        geofence.revision = Geofence.revision + 1  # in SQL: two edits at once move it twice
    for key, value in fields.items():
        setattr(geofence, key, value)
    return geofence


def visible_notifications(principal: Principal) -> SelectOfScalar[Notification]:
    """Every notification for an admin; those linked to the user otherwise."""
    query = select(Notification)
    if not principal.is_admin:
        mine = select(col(UserNotification.notification_id)).where(col(UserNotification.user_id) == principal.user_id)
        query = query.where(col(Notification.id).in_(mine))
    return query


async def get_notification(session: AsyncSession, principal: Principal, notification_id: int) -> Notification:
    """The notification, if the caller may see it; NotFound otherwise (unknown and not visible look alike)."""
    query = visible_notifications(principal).where(col(Notification.id) == notification_id)
    found: Notification | None = (await session.execute(query)).scalar_one_or_none()
    if found is None:
        raise not_found(f"notification {notification_id}")
    return found


@dataclass(frozen=True)
class Link:
    """One pair /api/permissions links: a device or a user, with a geofence or a notification; a device
    with a maintenance item."""

    table: type[SQLModel]
    key: dict[str, int]


async def permission_link(session: AsyncSession, principal: Principal, fields: dict[str, int]) -> Link:
    """Check the caller may link what the body names (both theirs; a user only by an admin) and say
    which link row it is. Exactly one of deviceId, userId and one of geofenceId, notificationId,
    maintenanceId (maintenance with a device only)."""
    owners = [name for name in ("deviceId", "userId") if name in fields]
    targets = [name for name in ("geofenceId", "notificationId", "maintenanceId") if name in fields]
    if len(owners) != 1:
        raise FieldError("deviceId", "expected exactly one of deviceId and userId")
    if len(targets) != 1:
        raise FieldError("geofenceId", "expected exactly one of geofenceId, notificationId and maintenanceId")
    owner, target = owners[0], targets[0]
    if (owner, target) == ("userId", "maintenanceId"):
        raise FieldError("maintenanceId", "a maintenance item is linked to devices, not users")
    if owner == "userId":
        if not principal.is_admin:
            raise Forbidden("only an admin links geofences and notifications to other users")
        if await session.get(User, fields["userId"]) is None:
            raise not_found(f"user {fields['userId']}")
    elif await get_device(session, principal, fields["deviceId"]) is None:
        raise not_found(f"device {fields['deviceId']}")
    if target == "geofenceId":
        await get_geofence(session, principal, fields["geofenceId"])
    elif target == "notificationId":
        await get_notification(session, principal, fields["notificationId"])
    else:
        await get_maintenance(session, principal, fields["maintenanceId"])
    tables: dict[tuple[str, str], type[SQLModel]] = {
        ("deviceId", "geofenceId"): DeviceGeofence,
        ("userId", "geofenceId"): UserGeofence,
        ("deviceId", "notificationId"): DeviceNotification,
        ("userId", "notificationId"): UserNotification,
        ("deviceId", "maintenanceId"): DeviceMaintenance,
    }
    columns = {
        "deviceId": "device_id",
        "userId": "user_id",
        "geofenceId": "geofence_id",
        "notificationId": "notification_id",
        "maintenanceId": "maintenance_id",
    }
    return Link(tables[(owner, target)], {columns[owner]: fields[owner], columns[target]: fields[target]})


async def link(session: AsyncSession, principal: Principal, fields: dict[str, int]) -> None:
    """Link the pair the body names (a device's positions checked against a geofence; a notification
    covering a device; a geofence or notification shared with a user)."""
    found = await permission_link(session, principal, fields)
    if await session.get(found.table, tuple(found.key.values())) is None:
        session.add(found.table(**found.key))


async def unlink(session: AsyncSession, principal: Principal, fields: dict[str, int]) -> None:
    found = await permission_link(session, principal, fields)
    if found.table is DeviceMaintenance:
        item = await get_maintenance(session, principal, fields["maintenanceId"])
        if item.device_id == fields["deviceId"]:
            raise FieldError("deviceId", "a maintenance item always applies to the device it was created for")
    table: sa.Table = found.table.__table__  # type: ignore[attr-defined]
    await session.execute(sa.delete(table).where(*(table.c[name] == value for name, value in found.key.items())))


def geofence_to_api(geofence: Geofence) -> dict[str, Any]:
    return {
        "id": geofence.id,
        "name": geofence.name,
        "description": geofence.description,
        "area": geofence.area,
        "attributes": geofence.attributes,
    }


async def get_event(session: AsyncSession, principal: Principal, event_id: int) -> Event:
    """The event, if it is about a device the caller may see; NotFound otherwise."""
    query = select(Event).where(col(Event.id) == event_id, col(Event.device_id).in_(visible_device_ids(principal)))
    found: Event | None = (await session.execute(query)).scalar_one_or_none()
    if found is None:
        raise not_found(f"event {event_id}")
    return found


async def recent_events(
    session: AsyncSession, principal: Principal, device_ids: list[int], types: list[str], limit: int, offset: int
) -> list[Event]:
    """Events about the devices the caller may see (those of `device_ids`, of `types`, when given), newest first."""
    query = select(Event).where(col(Event.device_id).in_(visible_device_ids(principal)))
    if device_ids:
        query = query.where(col(Event.device_id).in_(device_ids))
    if types:
        query = query.where(col(Event.type).in_(types))
    query = query.order_by(col(Event.event_time).desc(), col(Event.id).desc()).limit(limit).offset(offset)
    return list((await session.execute(query)).scalars())


def event_to_api(event: Event) -> dict[str, Any]:
    """An event in Traccar's field names, with the place it happened."""
    return {
        "id": event.id,
        "type": event.type,
        "eventTime": iso(event.event_time),
        "deviceId": event.device_id,
        "positionId": event.position_id,
        "geofenceId": event.geofence_id,
        "maintenanceId": event.maintenance_id,
        "latitude": event.latitude,
        "longitude": event.longitude,
        "attributes": event.attributes,
    }


async def list_maintenance(session: AsyncSession, principal: Principal) -> list[Maintenance]:
    query = select(Maintenance).where(col(Maintenance.device_id).in_(visible_device_ids(principal)))
    return list((await session.execute(query.order_by(col(Maintenance.id)))).scalars())


async def get_maintenance(session: AsyncSession, principal: Principal, item_id: int) -> Maintenance:
    """The item, if its device is one the caller may see; NotFound otherwise."""
    query = select(Maintenance).where(
        col(Maintenance.id) == item_id, col(Maintenance.device_id).in_(visible_device_ids(principal))
    )
    found: Maintenance | None = (await session.execute(query)).scalar_one_or_none()
    if found is None:
        raise not_found(f"maintenance {item_id}")
    return found


async def create_maintenance(session: AsyncSession, principal: Principal, fields: dict[str, Any]) -> Maintenance:
    device_id = fields.pop("deviceId")
    if await get_device(session, principal, device_id) is None:
        raise not_found(f"device {device_id}")
    item = Maintenance(device_id=device_id, **fields)
    check_maintenance(item)
    session.add(item)
    await session.flush()
    assert item.id is not None
    session.add(DeviceMaintenance(device_id=device_id, maintenance_id=item.id))  # it applies to its device
    return item


def update_maintenance(item: Maintenance, fields: dict[str, Any]) -> Maintenance:
    """Change the item's fields; a FieldError (400) when its lead would no longer be less than its period."""
    for key, value in fields.items():
        setattr(item, key, value)
    check_maintenance(item)
    return item


def check_maintenance(item: Maintenance) -> None:
    """The item as it will be stored: `attributes.lead` more than 0 and less than the period."""
    problem = lead_problem(item.attributes, item.period)
    if problem is not None:
        raise FieldError("attributes.lead", problem)


def maintenance_to_api(item: Maintenance) -> dict[str, Any]:
    return {
        "id": item.id,
        "deviceId": item.device_id,
        "name": item.name,
        "type": item.type,
        "start": item.start,
        "period": item.period,
        "attributes": item.attributes,
    }
