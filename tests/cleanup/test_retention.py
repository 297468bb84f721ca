"""Retention of positions and events on both databases: what is past each device's cutoff goes (whole
daily partitions on PostgreSQL, chunks elsewhere), nothing inside a window, never a device's newest."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.aged import count_positions, device_with, newest_ids, remaining, rows_in, store_positions, table
from tests.support.factories import Users
from tests.support.fleet import add_delivery, add_event
from tracker_jobs.cleanup import retention
from tracker_jobs.cleanup.chunks import CleanupRun
from tracker_jobs.cleanup.partitions import (
    DETACHED_MARK,
    EVENTS_BY_WEEK,
    POSITIONS_BY_DAY,
    detach_partitions,
    drop_detached,
    ensure_partitions,
    is_partitioned,
    list_partitions,
)
from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.events.models import Delivery, Event

AGES = (1, 10, 20, 35, 50, 70)  # days before now
POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # partitions


async def test_old_positions_go_by_each_devices_retention_and_every_newest_stays(
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    async with sessions() as session:
        partitioned = await is_partitioned(session, POSITIONS_BY_DAY)
    if partitioned:  # every day of the data has its partition, as on a database that has run for months
        await ensure_partitions(sessions, redis, (now - timedelta(days=80)).date(), ahead_days=88)
    van = await device_with(sessions, "van")
    keeper = await device_with(sessions, "keeper", retentionDays=60)
    brief = await device_with(sessions, "brief", retentionDays=5)
    forever = await device_with(sessions, "forever", retentionDays=0)
    silent = await device_with(sessions, "silent")  # stopped reporting 35 days ago
    lost = await device_with(sessions, "lost")  # stopped reporting 70 days ago: its day's partition goes
    for device_id in (van, keeper, brief, forever):
        await store_positions(sessions, device_id, now, AGES)
    await store_positions(sessions, silent, now, (35, 50, 70))
    await store_positions(sessions, lost, now, (70,))
    newest_before = await newest_ids(sessions)
    before = await remaining(sessions, now)
    count_before = await count_positions(sessions)

    planned = await retention.remove_old_positions(sessions, redis, CleanupRun(dry_run=True), now=now, days_to_keep=30)
    assert await remaining(sessions, now) == before  # a dry run removes nothing
    done = await retention.remove_old_positions(sessions, redis, CleanupRun(), now=now, days_to_keep=30)

    left = await remaining(sessions, now)
    assert left == {
        van: {1, 10, 20},
        keeper: {1, 10, 20, 35, 50},
        brief: {1},
        forever: set(AGES),
        silent: {35},  # only its newest
        lost: {70},
    }
    assert await newest_ids(sessions) == newest_before  # every newest position, by its id
    removed = count_before - await count_positions(sessions)
    assert removed == 9 + 3 + 15 + 0 + 8 + 2  # van, keeper, brief, forever, silent (all but its newest), lost
    assert planned["would_remove"]["positions"] == removed
    assert sum(planned["by_device"].values()) == removed
    if partitioned:
        # The days past every device's window (the keeper's 60 days; the "forever" device keeps its rows
        # in the partitions, so none may go) ... none is dropped while a device keeps for ever.
        assert done["partitions"] == []
    assert done["removed"]["positions"] == removed


async def van_keeper_and(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, now: datetime, name: str, age: int
) -> tuple[int, int, int]:
    """Every day's partition; a van (default retention) and a keeper (60 days) with positions of every
    age, and a device `name` that last reported `age` days ago."""
    await ensure_partitions(sessions, redis, (now - timedelta(days=80)).date(), ahead_days=88)
    van = await device_with(sessions, "van")
    keeper = await device_with(sessions, "keeper", retentionDays=60)
    other = await device_with(sessions, name)
    await store_positions(sessions, van, now, AGES)
    await store_positions(sessions, keeper, now, AGES)
    await store_positions(sessions, other, now, (age,))
    return van, keeper, other


async def test_a_retention_days_that_is_not_a_whole_number_of_days_leaves_the_device_on_the_default(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    flag = await device_with(sessions, "flag", retentionDays=True)  # SQLite's json_extract would say 1
    text = await device_with(sessions, "text", retentionDays="60")
    async with sessions() as session:
        kept = await retention.device_retention(session, utcnow(), 30, None)

    assert kept.default_devices == [flag, text]
    assert kept.own == {}


@POSTGRES_ONLY
async def test_past_every_window_whole_partitions_go_and_a_silent_devices_newest_moves_to_the_default(
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    van, keeper, lost = await van_keeper_and(sessions, redis, now, "lost", 70)
    newest_before = await newest_ids(sessions)
    old_day = POSITIONS_BY_DAY.partition_name((now - timedelta(days=70)).date())

    done = await retention.remove_old_positions(sessions, redis, CleanupRun(), now=now, days_to_keep=30)

    assert old_day in done["partitions"]  # past the keeper's 60 days too
    assert POSITIONS_BY_DAY.partition_name((now - timedelta(days=50)).date()) not in done["partitions"]  # the keeper's
    assert done["newest_kept_from_dropped"] == 1
    assert done["purge_s"] > 0  # the times the job reports, measured
    assert done["steps_s"]["plan"] > 0
    async with sessions() as session:
        names = {partition.name for partition in await list_partitions(session, POSITIONS_BY_DAY)}
        in_default = (await session.execute(sa.select(table(POSITIONS_BY_DAY.default_partition).c.id))).scalars().all()
    assert old_day not in names
    assert in_default == [newest_before[lost]]
    assert await remaining(sessions, now) == {van: {1, 10, 20}, keeper: {1, 10, 20, 35, 50}, lost: {70}}
    assert await newest_ids(sessions) == newest_before


@POSTGRES_ONLY
async def test_a_day_kept_only_for_longer_keepers_is_not_read_again_until_something_in_it_expires(
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    # The silent device's newest lies 50 days back, in a day kept for the keeper.
    van, keeper, silent = await van_keeper_and(sessions, redis, now, "silent", 50)
    kept_day = POSITIONS_BY_DAY.partition_name((now - timedelta(days=50)).date())

    first = await retention.remove_old_positions(sessions, redis, CleanupRun(), now=now, days_to_keep=30)
    again = await retention.remove_old_positions(sessions, redis, CleanupRun(), now=now, days_to_keep=30)
    await store_positions(sessions, van, now, (50,))  # a late upload into the kept day
    after_late = await retention.remove_old_positions(sessions, redis, CleanupRun(), now=now, days_to_keep=30)

    assert kept_day in first["swept"]
    assert kept_day not in again["swept"]  # only the keeper's rows and the silent device's newest are left
    assert again["removed"].get("positions", 0) == 0
    assert kept_day in after_late["swept"]
    assert after_late["removed"] == {"positions": 3}
    assert await remaining(sessions, now) == {van: {1, 10, 20}, keeper: {1, 10, 20, 35, 50}, silent: {50}}


@POSTGRES_ONLY
async def test_the_default_partition_is_swept_only_when_it_holds_a_row_to_remove(
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    van, keeper, lost = await van_keeper_and(sessions, redis, now, "lost", 70)
    default = POSITIONS_BY_DAY.default_partition

    first = await retention.remove_old_positions(sessions, redis, CleanupRun(), now=now, days_to_keep=30)
    again = await retention.remove_old_positions(sessions, redis, CleanupRun(), now=now, days_to_keep=30)
    await store_positions(sessions, van, now, (100,))  # a late upload of a day no partition holds
    after_late = await retention.remove_old_positions(sessions, redis, CleanupRun(), now=now, days_to_keep=30)

    assert default not in first["swept"]  # empty when planned: the lost device's newest came with the detach
    assert default not in again["swept"]  # that newest alone, which stays
    assert default in after_late["swept"]
    assert after_late["removed"] == {"positions": 3}
    assert await remaining(sessions, now) == {van: {1, 10, 20}, keeper: {1, 10, 20, 35, 50}, lost: {70}}


async def test_a_run_for_some_devices_touches_only_them(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    now = utcnow()
    van = await device_with(sessions, "van")
    bus = await device_with(sessions, "bus")
    for device_id in (van, bus):
        await store_positions(sessions, device_id, now, AGES)

    planned = await retention.remove_old_positions(
        sessions, redis, CleanupRun(dry_run=True), now=now, days_to_keep=15, device_ids=[bus]
    )
    done = await retention.remove_old_positions(
        sessions, redis, CleanupRun(), now=now, days_to_keep=15, device_ids=[bus]
    )

    assert await remaining(sessions, now) == {van: set(AGES), bus: {1, 10}}
    assert planned["by_device"] == {str(bus): 12}  # four ages of three
    assert done["removed"]["positions"] == 12
    assert done["partitions"] == []


@POSTGRES_ONLY
async def test_a_day_that_landed_in_the_default_partition_moves_into_its_own(
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    van = await device_with(sessions, "van")
    ahead = now + timedelta(days=12)  # past the partitions made ahead
    await store_positions(sessions, van, ahead, (0,))

    made = await ensure_partitions(sessions, redis, (now + timedelta(days=6)).date(), ahead_days=7)

    day = POSITIONS_BY_DAY.partition_name(ahead.date())
    assert day in made["made"]
    async with sessions() as session:
        in_day = await rows_in(session, day)
        in_default = await rows_in(session, POSITIONS_BY_DAY.default_partition)
    assert in_day > 0
    assert in_default == 0
    assert await remaining(sessions, now) == {van: {-12}}


async def test_old_events_go_with_their_deliveries_and_recent_ones_stay(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], users: Users
) -> None:
    now = utcnow()
    async with sessions() as session:
        partitioned = await is_partitioned(session, EVENTS_BY_WEEK)
    if partitioned:  # every week of the data has its partition, as on a database that has run for months
        await ensure_partitions(sessions, redis, (now - timedelta(days=210)).date(), ahead_days=217)
    van = await device_with(sessions, "van")
    hours = (24, 80 * 24, 90 * 24 - 12, 90 * 24 + 12, 100 * 24, 200 * 24)  # ages; the cutoff is at 90 days
    for age in hours:
        await add_event(sessions, van, "deviceOverspeed", now - timedelta(hours=age))
        await add_delivery(sessions, users.user, van, now - timedelta(hours=age))

    planned = await retention.remove_old_events(sessions, redis, CleanupRun(dry_run=True), now=now, days_to_keep=90)
    reported: list[tuple[int, int, str]] = []

    async def progress(done: int, total: int, message: str) -> None:
        reported.append((done, total, message))

    done = await retention.remove_old_events(sessions, redis, CleanupRun(progress=progress), now=now, days_to_keep=90)

    assert reported[-1][0] == reported[-1][1] == len(reported)  # each step reported, the last one done
    assert any(message.startswith("detached") for _, _, message in reported) == partitioned
    async with sessions() as session:
        events = (await session.execute(sa.select(Event.event_time))).scalars()
        deliveries = (await session.execute(sa.select(Delivery.created_at))).scalars()
        left = sorted(round((now - time) / timedelta(hours=1)) for time in events)
        left_deliveries = sorted(round((now - time) / timedelta(hours=1)) for time in deliveries)
    assert left == left_deliveries == [24, 80 * 24, 90 * 24 - 12]
    assert planned["would_remove"] == done["removed"] == {"events": 3, "deliveries": 3}
    if partitioned:  # the weeks of the 100- and 200-day-old events went whole; the boundary week was trimmed
        weeks = {EVENTS_BY_WEEK.partition_name((now - timedelta(days=age)).date()) for age in (100, 200)}
        assert weeks <= set(done["partitions"]) <= set(done["dropped_tables"])
        assert EVENTS_BY_WEEK.partition_name((now - timedelta(days=89)).date()) not in done["partitions"]
        async with sessions() as session:
            names = {partition.name for partition in await list_partitions(session, EVENTS_BY_WEEK)}
        assert not weeks & names
        assert EVENTS_BY_WEEK.partition_name(now.date()) in names


@pytest.mark.parametrize("days", [0])
async def test_zero_days_keeps_everything(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], days: int
) -> None:
    now = utcnow()
    van = await device_with(sessions, "van")
    await store_positions(sessions, van, now, AGES)
    await add_event(sessions, van, "deviceOverspeed", now - timedelta(days=400))

    await retention.remove_old_positions(sessions, redis, CleanupRun(), now=now, days_to_keep=days)
    await retention.remove_old_events(sessions, redis, CleanupRun(), now=now, days_to_keep=days)

    assert await remaining(sessions, now) == {van: set(AGES)}
    async with sessions() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(Event))).scalar_one() == 1


async def a_week_with_an_old_event(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, now: datetime) -> str:
    """Weeks made back to 120 days, as on a database that has run for months; the partition of an event
    110 days old (past 90 days of retention)."""
    await ensure_partitions(sessions, redis, (now - timedelta(days=120)).date(), ahead_days=127)
    van = await device_with(sessions, "van")
    await add_event(sessions, van, "deviceOverspeed", now - timedelta(days=110))
    return EVENTS_BY_WEEK.partition_name((now - timedelta(days=110)).date())


@POSTGRES_ONLY
async def test_a_week_left_detached_by_a_stopped_run_is_dropped_by_the_next(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    now = utcnow()
    week = await a_week_with_an_old_event(sessions, redis, now)
    kept = EVENTS_BY_WEEK.partition_name((now - timedelta(days=103)).date())
    async with transaction(sessions) as session:
        # A run stopped right after its detach committed: the week is out of events, marked, with its keys.
        await session.execute(sa.text(f"ALTER TABLE events DETACH PARTITION {week}"))
        await session.execute(sa.text(f"COMMENT ON TABLE {week} IS '{DETACHED_MARK}'"))
        # A week an operator detached to keep: not the engine's to drop.
        await session.execute(sa.text(f"ALTER TABLE events DETACH PARTITION {kept}"))

    done = await retention.remove_old_events(sessions, redis, CleanupRun(), now=now, days_to_keep=90)

    assert week in done["dropped_tables"]
    assert kept not in done["dropped_tables"]
    assert week not in done["partitions"]  # not attached any more: the plan did not see it
    async with sessions() as session:
        assert (await session.execute(sa.text("SELECT to_regclass(:name)"), {"name": week})).scalar() is None
        assert (await session.execute(sa.text("SELECT to_regclass(:name)"), {"name": kept})).scalar() is not None
        await session.execute(sa.text(f"DROP TABLE {kept}"))
        await session.commit()


@POSTGRES_ONLY
async def test_a_reader_of_devices_leaves_the_detached_keys_for_later_and_holds_nothing_up(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    now = utcnow()
    week = await a_week_with_an_old_event(sessions, redis, now)
    async with sessions() as reader:
        # A long read of devices (a report, say): dropping a key needs devices' exclusive lock.
        await reader.execute(sa.text("SELECT count(*) FROM devices"))
        partitions = [p for p in await list_partitions(reader, EVENTS_BY_WEEK) if p.name == week]
        started = time.monotonic()
        await detach_partitions(sessions, redis, EVENTS_BY_WEEK, partitions)
        detach_s = time.monotonic() - started
        left = await drop_detached(sessions, redis, EVENTS_BY_WEEK)
        await reader.rollback()

    assert detach_s < 0.45  # the keys were not waited for (LOCK_TIMEOUT is 0.5 s)
    assert left == []  # keys still on it: kept for the next run, not dropped with the drains paused
    assert await drop_detached(sessions, redis, EVENTS_BY_WEEK) == [week]  # the reader gone, it goes
