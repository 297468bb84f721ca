"""Duplicate positions: a device's fixes at the same place in the same second are one, kept as the row
the device's position_id names, else the lowest id; a different place or second is not a repeat."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.factories import add_device
from tracker_jobs.cleanup import chunks
from tracker_jobs.cleanup.chunks import CleanupRun
from tracker_jobs.cleanup.duplicates import clean_duplicate_positions
from tracker_jobs.core.db import transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.positions.models import Position

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def add_positions(
    sessions: async_sessionmaker[AsyncSession], device: int, *fixes: tuple[float, float]
) -> list[int]:
    """(seconds after T0, latitude) each; their ids, in order."""
    async with transaction(sessions) as session:
        rows = [
            Position(
                device_id=device,
                fix_time=T0 + timedelta(seconds=seconds),
                server_time=T0,
                latitude=latitude,
                longitude=20.0,
            )
            for seconds, latitude in fixes
        ]
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows if row.id is not None]


async def point_device_at(sessions: async_sessionmaker[AsyncSession], device: int, position: int) -> None:
    async with transaction(sessions) as session:
        await session.execute(sa.update(Device).where(Device.id == device).values(position_id=position))  # type: ignore[arg-type]


async def stored_ids(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with transaction(sessions) as session:
        return list((await session.execute(sa.select(Position.id).order_by(Position.id))).scalars())  # type: ignore[arg-type]


async def fleet(sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[int]]:
    """Three devices' positions. "named": a fix repeated 0.3 s later, which the device names as its
    position, and kept apart from it a different place (0.7 s) and a different second (1.2 s); "plain",
    which names none: three fixes in second 5 (two repeats) and one in second 6 (5.9 s and 6.1 s are
    0.2 s apart but not in the same second); "other": one repeat."""
    named, plain, other = [await add_device(sessions, name) for name in ("named", "plain", "other")]
    rows = {
        "named": await add_positions(sessions, named, (0.1, 10.0), (0.4, 10.0), (0.7, 10.001), (1.2, 10.0)),
        "plain": await add_positions(sessions, plain, (5.2, 11.0), (5.5, 11.0), (5.9, 11.0), (6.1, 11.0)),
        "other": await add_positions(sessions, other, (0.0, 12.0), (0.5, 12.0)),
    }
    await point_device_at(sessions, named, rows["named"][1])
    return {**rows, "devices": [named, plain, other]}


async def test_repeats_are_removed_keeping_the_devices_position(sessions: async_sessionmaker[AsyncSession]) -> None:
    rows = await fleet(sessions)
    named, plain, other = rows["named"], rows["plain"], rows["other"]

    result = await clean_duplicate_positions(sessions, CleanupRun())

    assert result["removed"] == {"positions": 4}
    assert result["devices"] == 3
    # named: the first fix goes, the later one the device names stays; plain: the lowest id of 5.2-5.9.
    expected = [named[1], named[2], named[3], plain[0], plain[3], other[0]]
    assert await stored_ids(sessions) == sorted(expected)
    again = await clean_duplicate_positions(sessions, CleanupRun())
    assert again["removed"] == {"positions": 0}


async def test_a_dry_run_counts_the_same_and_changes_nothing(sessions: async_sessionmaker[AsyncSession]) -> None:
    await fleet(sessions)
    before = await stored_ids(sessions)

    result = await clean_duplicate_positions(sessions, CleanupRun(dry_run=True))

    assert result["would_remove"] == {"positions": 4}
    assert await stored_ids(sessions) == before


async def test_only_the_devices_asked_for_are_cleaned(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunks, "DEVICES_PER_GROUP", 1)
    rows = await fleet(sessions)
    named, plain, _ = rows["devices"]
    reported: list[tuple[int, int]] = []

    async def progress(done: int, total: int, message: str) -> None:
        reported.append((done, total))

    result = await clean_duplicate_positions(sessions, CleanupRun(progress=progress), device_ids=[plain, named])

    assert result["removed"] == {"positions": 3}
    assert result["devices"] == 2
    assert reported == [(1, 2), (2, 2)]
    assert set(rows["other"]) <= set(await stored_ids(sessions))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL stores a timestamp
async def test_sqlite_stores_the_fix_time_as_text_to_the_microsecond(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """What the SQLite query cuts to the second: the first 19 characters of the stored text."""
    device = await add_device(sessions, "stored")
    await add_positions(sessions, device, (0.25, 10.0))
    async with transaction(sessions) as session:
        stored = (await session.execute(sa.text("SELECT fix_time FROM positions"))).scalar_one()
    assert stored == "2026-01-01 00:00:00.250000"
