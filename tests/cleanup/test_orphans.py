"""Orphans: rows whose parent is gone (written here with the foreign keys off, as a restored dump or an
old version could leave them) are removed or nulled as their key says; healthy rows stay; a dry run
counts the same and changes nothing; set-aside stream entries past the retention are trimmed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import SQLModel

from tests.support.factories import Users, add_device
from tracker_jobs.cleanup import orphans
from tracker_jobs.cleanup.chunks import CleanupRun
from tracker_jobs.cleanup.orphans import clean_orphans
from tracker_jobs.core.db import transaction
from tracker_jobs.devices.models import UserDevice
from tracker_jobs.events.models import Event, Geofence
from tracker_jobs.models import metadata
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.stream import SET_ASIDE_KEY

GONE = 999_999  # an id no parent row has
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ORPHANS = {"positions.device_id": 1, "user_devices.user_id": 1, "events.geofence_id": 1}


async def insert_unchecked(engine: AsyncEngine, *rows: SQLModel) -> None:
    """Store rows without the foreign keys being checked."""
    async with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        # SQLite ignores the pragma inside a transaction; SQLAlchemy has begun none on SQLite before the
        # first write. PostgreSQL: the FK triggers are off for this transaction (the tests are superuser).
        off = "PRAGMA foreign_keys=OFF" if sqlite else "SET LOCAL session_replication_role = replica"
        await connection.exec_driver_sql(off)
        async with AsyncSession(bind=connection) as session:
            session.add_all(rows)
            await session.flush()
        await connection.commit()
        if sqlite:  # the connection goes back to the pool as it came
            await connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            await connection.commit()


def checked_keys() -> set[str]:
    """Every single-column key to another table's id in the whole schema."""
    return {
        f"{table.name}.{fk.parent.name}"
        for table in metadata.sorted_tables
        for fk in table.foreign_keys
        if fk.column.name == "id" and fk.column.table is not table
    }


async def make_orphans(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], users: Users) -> int:
    """Healthy rows and one orphan of each kind (a position of a gone device, a link to a gone user, an
    event naming a gone geofence); the device's id."""
    device = await add_device(sessions, "healthy", owner=users.user)
    async with transaction(sessions) as session:
        geofence = Geofence(name="yard", area="CIRCLE (10 20, 100)")
        session.add(geofence)
        await session.flush()
        session.add(Position(device_id=device, fix_time=T0, server_time=T0, latitude=10.0, longitude=20.0))
        session.add(Event(type="geofenceEnter", device_id=device, event_time=T0, geofence_id=geofence.id))
    await insert_unchecked(
        engine,
        Position(device_id=GONE, fix_time=T0, server_time=T0, latitude=1.0, longitude=2.0),
        UserDevice(user_id=GONE, device_id=device),
        Event(type="geofenceExit", device_id=device, event_time=T0, geofence_id=GONE),
    )
    return device


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[tuple[int | None, ...]]]:
    async with transaction(sessions) as session:

        async def rows(statement: sa.Select[tuple[int | None, int | None]]) -> list[tuple[int | None, ...]]:
            return [tuple(row) for row in (await session.execute(statement)).all()]

        return {
            "positions": await rows(sa.select(Position.device_id, Position.id).order_by(Position.id)),  # type: ignore[arg-type]
            "user_devices": await rows(
                sa.select(UserDevice.user_id, UserDevice.device_id).order_by(UserDevice.user_id)  # type: ignore[arg-type]
            ),
            "events": await rows(sa.select(Event.type, Event.geofence_id).order_by(Event.type)),  # type: ignore[arg-type]
        }


async def test_orphans_are_removed_or_nulled_and_healthy_rows_kept(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, users: Users
) -> None:
    device = await make_orphans(engine, sessions, users)
    before = await snapshot(sessions)

    result = await clean_orphans(sessions, redis, CleanupRun(), set_aside_days=0)

    assert result["removed"] == {key: ORPHANS.get(key, 0) for key in checked_keys()}
    assert set(result["steps_s"]) == checked_keys() | {"set_aside_entries"}
    after = await snapshot(sessions)
    assert [row[0] for row in after["positions"]] == [device]
    assert after["positions"][0] in before["positions"]
    assert after["user_devices"] == [(users.user, device)]
    geofence = before["events"][0][1]
    assert after["events"] == [("geofenceEnter", geofence), ("geofenceExit", None)]
    # Nothing is left to find.
    again = await clean_orphans(sessions, redis, CleanupRun(), set_aside_days=0)
    assert set(again["removed"].values()) == {0}


async def test_a_dry_run_counts_the_same_and_changes_nothing(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, users: Users
) -> None:
    await make_orphans(engine, sessions, users)
    before = await snapshot(sessions)

    result = await clean_orphans(sessions, redis, CleanupRun(dry_run=True), set_aside_days=0)

    assert result["dry_run"] is True
    assert result["would_remove"] == {key: ORPHANS.get(key, 0) for key in checked_keys()}
    assert await snapshot(sessions) == before


async def test_progress_is_reported_after_each_key(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis) -> None:
    reported: list[tuple[int, int, str]] = []

    async def progress(done: int, total: int, message: str) -> None:
        reported.append((done, total, message))

    await clean_orphans(sessions, redis, CleanupRun(progress=progress), set_aside_days=0)

    total = len(checked_keys()) + 1
    assert [(done, of) for done, of, _ in reported] == [(done, total) for done in range(1, total + 1)]
    assert reported[0][2].startswith("checked ")


@pytest.mark.parametrize("dry_run", [False, True])
async def test_set_aside_entries_past_the_retention_are_trimmed(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    monkeypatch.setattr(orphans, "STREAM_PAGE", 2)  # the dry run's count reads several pages
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    old_ms = now_ms - int(timedelta(days=8).total_seconds() * 1000)
    for sequence in range(5):
        await redis.xadd(SET_ASIDE_KEY, {"p": b"old"}, id=f"{old_ms}-{sequence}")
    for sequence in range(3):
        await redis.xadd(SET_ASIDE_KEY, {"p": b"new"}, id=f"{now_ms}-{sequence}")

    kept = await clean_orphans(sessions, redis, CleanupRun(dry_run=dry_run), set_aside_days=0)
    assert "set_aside_entries" not in kept["would_remove" if dry_run else "removed"]
    assert await redis.xlen(SET_ASIDE_KEY) == 8

    result = await clean_orphans(sessions, redis, CleanupRun(dry_run=dry_run), set_aside_days=7)

    assert result["would_remove" if dry_run else "removed"]["set_aside_entries"] == 5
    remaining = [fields[b"p"] for _, fields in await redis.xrange(SET_ASIDE_KEY)]
    assert remaining == [b"old"] * 5 + [b"new"] * 3 if dry_run else [b"new"] * 3
