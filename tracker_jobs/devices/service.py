"""Devices: lookup by uniqueId (cached in Redis for the ingest path), access rules, CRUD."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from tracker_jobs.db import dialect_name, iso, transaction
from tracker_jobs.devices.models import Device, UserDevice
from tracker_jobs.users.service import Principal

# uniqueId -> device id; written on a miss, removed when a device is deleted or renamed.
DEVICE_IDS_KEY = "tracker:device-ids"


class UnknownDevice(LookupError):
    """A device reported that is not registered, and auto-registration is off."""


async def resolve_device_id(
    redis: Redis, sessions: async_sessionmaker[AsyncSession], unique_id: str, *, auto_register: bool
) -> int:
    cached = await redis.hget(DEVICE_IDS_KEY, unique_id)  # type: ignore[misc]
    if cached is not None:
        return int(cached)
    async with transaction(sessions) as session:
        device_id = await _device_id(session, unique_id)
        if device_id is None:
            if not auto_register:
                raise UnknownDevice(unique_id)
            device_id = await _register(session, unique_id)
    await redis.hset(DEVICE_IDS_KEY, unique_id, str(device_id))  # type: ignore[misc]
    return device_id


async def _device_id(session: AsyncSession, unique_id: str) -> int | None:
    found: int | None = (
        await session.execute(select(Device.id).where(col(Device.unique_id) == unique_id))
    ).scalar_one_or_none()
    return found


async def _register(session: AsyncSession, unique_id: str) -> int:
    # Two requests from a new device can race; the unique key keeps one row and both read its id.
    insert = postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert
    await session.execute(
        insert(Device).values(unique_id=unique_id, name=unique_id, attributes={}).on_conflict_do_nothing()
    )
    device_id = await _device_id(session, unique_id)
    assert device_id is not None
    return device_id


def visible_device_ids(principal: Principal) -> SelectOfScalar[int | None] | SelectOfScalar[int]:
    """The ids of the devices a caller may see: every one for an admin, the linked ones for a user."""
    if principal.is_admin:
        return select(col(Device.id))
    return select(col(UserDevice.device_id)).where(col(UserDevice.user_id) == principal.user_id)


def visible_devices(principal: Principal) -> SelectOfScalar[Device]:
    return select(Device).where(col(Device.id).in_(visible_device_ids(principal)))


async def list_devices(session: AsyncSession, principal: Principal) -> list[Device]:
    return list((await session.execute(visible_devices(principal).order_by(col(Device.id)))).scalars())


async def get_device(session: AsyncSession, principal: Principal, device_id: int) -> Device | None:
    query = visible_devices(principal).where(col(Device.id) == device_id)
    found: Device | None = (await session.execute(query)).scalar_one_or_none()
    return found


async def unique_id_taken(session: AsyncSession, unique_id: str, *, except_id: int | None = None) -> bool:
    query = select(Device.id).where(col(Device.unique_id) == unique_id)
    if except_id is not None:
        query = query.where(col(Device.id) != except_id)
    return (await session.execute(query)).first() is not None


async def create_device(session: AsyncSession, principal: Principal, fields: dict[str, Any]) -> Device:
    device = Device(**fields)
    session.add(device)
    await session.flush()
    if not principal.is_admin:
        assert device.id is not None
        session.add(UserDevice(user_id=principal.user_id, device_id=device.id))
    return device


async def forget_unique_id(redis: Redis, unique_id: str) -> None:
    await redis.hdel(DEVICE_IDS_KEY, unique_id)  # type: ignore[misc]


def device_to_api(device: Device) -> dict[str, Any]:
    """A device in Traccar's field names."""
    return {
        "id": device.id,
        "name": device.name,
        "uniqueId": device.unique_id,
        "status": device.status,
        "disabled": device.disabled,
        "lastUpdate": iso(device.last_update),
        "positionId": device.position_id,
        "speedLimit": device.speed_limit,
        "totalDistance": device.total_distance,
        "motion": device.motion,
        "attributes": device.attributes,
    }
