"""Users, tokens and devices made directly in the database, and positions as the batch API takes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.core.db import transaction
from tracker_jobs.core.principal import Role
from tracker_jobs.devices.models import Device, DeviceMaintenance, Maintenance, UserDevice
from tracker_jobs.users.models import ApiToken, User
from tracker_jobs.users.service import hash_password, hash_token

USER_TOKEN = "ops-user-token"
OTHER_TOKEN = "ops-other-user-token"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Users:
    """The ids of the two `user` accounts of the `users` fixture."""

    user: int  # holds USER_TOKEN
    other: int  # holds OTHER_TOKEN


async def make_user(
    sessions: async_sessionmaker[AsyncSession], email: str, *, token: str, password: str | None = None
) -> int:
    password_hash = None if password is None else await hash_password(password)
    async with transaction(sessions) as session:
        user = User(name=email, email=email, role=Role.USER, password_hash=password_hash)
        session.add(user)
        await session.flush()
        assert user.id is not None
        session.add(ApiToken(user_id=user.id, name="test", token_hash=hash_token(token)))
        return user.id


async def add_device(sessions: async_sessionmaker[AsyncSession], unique_id: str, owner: int | None = None) -> int:
    async with transaction(sessions) as session:
        device = Device(unique_id=unique_id, name=unique_id)
        session.add(device)
        await session.flush()
        assert device.id is not None
        if owner is not None:
            session.add(UserDevice(user_id=owner, device_id=device.id))
        return device.id


async def add_maintenance(sessions: async_sessionmaker[AsyncSession], device: int, **fields: Any) -> Maintenance:
    """A maintenance item for the device, applying to it (as POST /api/maintenance makes one)."""
    async with transaction(sessions) as session:
        item = Maintenance(device_id=device, **fields)
        session.add(item)
        await session.flush()
        assert item.id is not None
        session.add(DeviceMaintenance(device_id=device, maintenance_id=item.id))
    return item


def position(device_id: int, second: int, **fields: Any) -> dict[str, Any]:
    """A position for the batch API, `second` seconds after T0."""
    return {
        "deviceId": device_id,
        "fixTime": T0 + second,
        "latitude": 10.0 + second * 0.001,
        "longitude": 20.0,
        "speed": 5.0,
        **fields,
    }
