"""Positions of given ages (days before now) for retention tests, and what is left of them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.factories import add_device
from tracker_jobs.core.db import insert_ignoring_duplicates, transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.positions.models import Position


async def store_positions(
    sessions: async_sessionmaker[AsyncSession], device_id: int, now: datetime, ages: tuple[int, ...]
) -> None:
    """Positions `ages` days old (three an age, minutes apart), the device's newest named by position_id."""
    rows = [
        {
            "device_id": device_id,
            "protocol": "osmand",
            "fix_time": now - timedelta(days=age, minutes=minute),
            "server_time": now,
            "latitude": 50.0,
            "longitude": 8.0 + minute / 1000,
            "altitude": 0.0,
            "speed": 0.0,
            "course": 0.0,
            "accuracy": 0.0,
            "valid": True,
            "attributes": {},
        }
        for age in ages
        for minute in (0, 5, 10)
    ]
    async with transaction(sessions) as session:
        await insert_ignoring_duplicates(session, Position.__table__, rows)  # type: ignore[attr-defined]
        newest, fix_time = (
            await session.execute(
                sa.select(Position.id, Position.fix_time)
                .where(Position.device_id == device_id)
                .order_by(sa.desc(Position.fix_time))
                .limit(1)
            )
        ).one()
        # As the drain moves a device forward: its newest position's id and fix time.
        await session.execute(
            sa.update(Device).where(Device.id == device_id).values(position_id=newest, position_time=fix_time)
        )


async def device_with(sessions: async_sessionmaker[AsyncSession], name: str, **attributes: Any) -> int:
    device_id = await add_device(sessions, name)
    async with transaction(sessions) as session:
        await session.execute(sa.update(Device).where(Device.id == device_id).values(attributes=attributes))
    return device_id


async def remaining(sessions: async_sessionmaker[AsyncSession], now: datetime) -> dict[int, set[int]]:
    """device -> the ages (whole days) of its positions left."""
    async with sessions() as session:
        rows = (await session.execute(sa.select(Position.device_id, Position.fix_time))).all()
    found: dict[int, set[int]] = {}
    for device_id, fix_time in rows:
        found.setdefault(device_id, set()).add((now - fix_time).days)
    return found


def table(name: str) -> sa.TableClause:
    return sa.table(name, sa.column("id"))


async def rows_in(session: AsyncSession, name: str) -> int:
    return int((await session.execute(sa.select(sa.func.count()).select_from(table(name)))).scalar_one())


async def count_positions(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int((await session.execute(sa.select(sa.func.count()).select_from(Position))).scalar_one())


async def newest_ids(sessions: async_sessionmaker[AsyncSession]) -> dict[int, int]:
    async with sessions() as session:
        devices = (await session.execute(sa.select(Device.id, Device.position_id))).all()
        stored = set((await session.execute(sa.select(Position.id))).scalars())
    return {device_id: position_id for device_id, position_id in devices if position_id in stored}
