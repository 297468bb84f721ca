"""Devices: lookup by uniqueId (cached in Redis for the ingest path), access rules, CRUD."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from tracker_jobs.core.access import AccessChange
from tracker_jobs.core.db import dialect_name, iso, transaction
from tracker_jobs.core.errors import Forbidden, NotFound, not_found
from tracker_jobs.core.fields import SECRET_SHOWN
from tracker_jobs.core.principal import Principal
from tracker_jobs.devices.keys import live_key, rate_key
from tracker_jobs.devices.models import Device, UserDevice

log = logging.getLogger(__name__)
DIRECTORY_REFRESH_S = 60.0  # a safety net: changes reach every process at once through access.ACCESS_CHANNEL
UNKNOWN_FOR_S = 10.0  # an unregistered id is not looked up again for this long


class UnknownDevice(NotFound):
    """The device does not exist, or the caller may not see it (or, reporting, it is not registered
    and auto-registration is off)."""

    code = "unknown_device"


class DisabledDevice(Forbidden):
    """A device an operator has disabled: its positions are refused at the door."""

    code = "device_disabled"


class DeviceDirectory:
    """uniqueId -> device id for the ingest path, kept in this process's memory.

    The whole map is loaded in one query, so a reporting fleet costs no database round trip per
    position; a device the map does not know yet is looked up (or registered) once. A device that is
    deleted, disabled or renamed anywhere is forgotten at once (`apply`, fed by the access channel),
    and the map is reloaded once a minute in case a message was missed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.ids: dict[str, int] = {}
        self.disabled: set[int] = set()
        self.unknown: dict[str, float] = {}
        self.loaded_at = float("-inf")
        self.loading = asyncio.Lock()
        # Bumped by every change: a read that was in flight across a change may hold rows from before
        # the change's commit, so it is read again (one device) or thrown away (the whole map).
        self.generation = 0

    async def resolve(self, unique_id: str, *, auto_register: bool) -> int:
        """The device's id; UnknownDevice or DisabledDevice when its positions must be refused."""
        if time.monotonic() - self.loaded_at > DIRECTORY_REFRESH_S:
            await self._load()
        found = self.ids.get(unique_id)
        if found is None:
            found = await self._look_up(unique_id, auto_register=auto_register)
        if found in self.disabled:
            raise DisabledDevice(f"id: device {unique_id!r} is disabled")
        return found

    async def _look_up(self, unique_id: str, *, auto_register: bool) -> int:
        if not auto_register and time.monotonic() - self.unknown.get(unique_id, float("-inf")) < UNKNOWN_FOR_S:
            raise UnknownDevice(f"id: device {unique_id!r} is not registered")
        while True:
            generation = self.generation
            found = await self._read_one(unique_id, auto_register=auto_register)
            if self.generation == generation:
                break
        if found is None:
            self.unknown[unique_id] = time.monotonic()
            raise UnknownDevice(f"id: device {unique_id!r} is not registered")
        device_id, disabled = found
        self.ids[unique_id] = device_id
        if disabled:
            self.disabled.add(device_id)
        return device_id

    async def _read_one(self, unique_id: str, *, auto_register: bool) -> tuple[int, bool] | None:
        """The device's id and whether it is disabled; registered first when unknown and `auto_register`."""
        async with transaction(self.sessions) as session:
            query = select(Device.id, Device.disabled).where(col(Device.unique_id) == unique_id)
            row = (await session.execute(query)).first()
            if row is not None and row[0] is not None:
                return row[0], row[1]
            return (await register_device(session, unique_id), False) if auto_register else None

    def apply(self, change: AccessChange) -> None:
        """Forget the devices a change names (the next position looks them up again), or all of them."""
        self.generation += 1
        if change.everything:
            self.loaded_at = float("-inf")
        elif change.devices:
            kept = self.ids.items()
            self.ids = {unique_id: device_id for unique_id, device_id in kept if device_id not in change.devices}
            self.disabled -= change.devices
        self.unknown.clear()  # a device created meanwhile is looked up at once

    async def _load(self) -> None:
        async with self.loading:
            if time.monotonic() - self.loaded_at <= DIRECTORY_REFRESH_S:
                return  # another request loaded it while this one waited
            generation = self.generation
            rows = await self._read_all()
            if self.generation != generation:
                return  # read across a change: the next position loads the map again
            self.ids = {unique_id: device_id for unique_id, device_id, _ in rows}
            self.disabled = {device_id for _, device_id, disabled in rows if disabled}
            self.unknown.clear()
            self.loaded_at = time.monotonic()

    async def _read_all(self) -> list[tuple[str, int, bool]]:
        """Every device: uniqueId, id, disabled."""
        async with self.sessions() as session:
            rows = await session.execute(select(Device.unique_id, Device.id, Device.disabled))
            return [(unique_id, device_id, disabled) for unique_id, device_id, disabled in rows if device_id]


async def register_device(session: AsyncSession, unique_id: str) -> int:
    return (await register_devices(session, {unique_id}))[unique_id]


async def register_devices(session: AsyncSession, unique_ids: set[str]) -> dict[str, int]:
    """Create the devices (named by their uniqueId) in one statement; uniqueId -> id of each.
    Two requests from a new device can race; the unique key keeps one row and both read its id."""
    insert = postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert
    await session.execute(
        insert(Device).on_conflict_do_nothing(),
        [{"unique_id": unique_id, "name": unique_id, "attributes": {}} for unique_id in sorted(unique_ids)],
    )
    rows = await session.execute(select(Device.unique_id, Device.id).where(col(Device.unique_id).in_(unique_ids)))
    return {unique_id: device_id for unique_id, device_id in rows if device_id is not None}


def visible_device_ids(principal: Principal) -> SelectOfScalar[int | None] | SelectOfScalar[int]:
    """The ids of the devices a caller may see: every one for an admin, the linked ones for a user."""
    if principal.is_admin:
        return select(col(Device.id))
    return select(col(UserDevice.device_id)).where(col(UserDevice.user_id) == principal.user_id)


def visible_devices(principal: Principal) -> SelectOfScalar[Device]:
    return select(Device).where(col(Device.id).in_(visible_device_ids(principal)))


async def list_devices(session: AsyncSession, principal: Principal) -> list[Device]:
    return list((await session.execute(visible_devices(principal).order_by(col(Device.id)))).scalars())


async def visible_ids_of(session: AsyncSession, principal: Principal, unique_ids: list[str]) -> list[int]:
    """The ids of the devices with these uniqueIds that the caller may see; NotFound naming the first
    uniqueId that is not one of them (unknown and not visible look the same)."""
    query = visible_devices(principal).where(col(Device.unique_id).in_(unique_ids))
    found = {device.unique_id: device.id for device in (await session.execute(query)).scalars()}
    for unique_id in unique_ids:
        if found.get(unique_id) is None:
            raise not_found(f"device with uniqueId {unique_id!r}")
    return [device_id for device_id in found.values() if device_id is not None]


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


async def forget_device_state(redis: Redis, device_id: int) -> None:
    """Drop what Redis keeps for a deleted device: its newest position and rate window. (Its cached
    statistics expire within a minute and cannot be read meanwhile: the endpoint 404s first.) Redis
    away is logged, not raised: the delete has committed, and ids are never given out again."""
    try:
        await redis.delete(live_key(device_id), rate_key(device_id))
    except Exception as error:
        log.warning("could not drop the cached state of deleted device %d: %s", device_id, error)


# Where a device's commands go, and the key that signs them (commands/types.py): only an admin sets them
# (a user who could repoint the gateway would receive other users' commands), and the key is never
# read back.
ADMIN_ONLY_ATTRIBUTES = ("commandGateway", "commandGatewaySecret")
SECRET_ATTRIBUTES = ("commandGatewaySecret",)


def checked_attributes(principal: Principal, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A device's new attributes: a secret sent back as it was shown stays as it is; Forbidden when
    someone not an admin changes one only an admin may set."""
    attributes = dict(after)
    for key in SECRET_ATTRIBUTES:
        if attributes.get(key) == SECRET_SHOWN:
            if key in before:
                attributes[key] = before[key]
            else:
                del attributes[key]
    if not principal.is_admin:
        for key in ADMIN_ONLY_ATTRIBUTES:
            if attributes.get(key) != before.get(key):
                raise Forbidden(f"attributes.{key}: only an admin may set it")
    return attributes


def device_to_api(device: Device) -> dict[str, Any]:
    """A device in Traccar's field names (its secrets shown as SECRET_SHOWN)."""
    attributes = dict(device.attributes or {})
    for key in SECRET_ATTRIBUTES:
        if attributes.get(key):
            attributes[key] = SECRET_SHOWN
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
        "attributes": attributes,
    }
