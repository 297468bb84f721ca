"""Positions and events on PostgreSQL: tables range-partitioned by time, positions a partition a day,
events a partition a week.

Why a day for positions: a fleet of 1,000 devices reporting every 10 s writes 8.6 million rows a day, so a
day's partition is a few GB at most, retention's granularity is a day, and 30 to 400 days of history are
30 to 400 partitions, which the planner prunes to the days a query asks for (a report, a device's track).
Weekly partitions would keep up to a week past the cutoff to trim row by row.

Why a week for events: they are hundreds to thousands of times fewer than positions (a geofence crossed,
an overspeed begun), kept longer (90 days by default), and read by id as well as by time (a delivery
names its event by id alone, which probes every partition): a week keeps 90 days in 14 partitions of a
reasonable size, and the boundary week left to trim row by row is a few thousand events.

Partitions are made `AHEAD_DAYS` ahead (at worker start-up and by an hourly cron job), as pg_partman's
premake does; each table's `_default` partition catches what fits no partition (a fix far in the past or
the future, and each silent device's newest position once its day is dropped, see `detach_partitions`).
The engine never makes a partition for a period that has gone: such rows stay in the default partition,
whose size `GET /api/cleanup/status` reports.

Everything here is plain PostgreSQL DDL (no extension) with a short lock timeout: the DDL that needs
the parent table's exclusive lock waits at most `LOCK_TIMEOUT` for writers to finish, then gives way
and tries again later, so ingest is never held up behind it for long.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.core.db import UTCDateTime, dialect_name, lock_timed_out, transaction
from tracker_jobs.positions import stream

log = logging.getLogger(__name__)

AHEAD_DAYS = 7
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
# Every drain reads the positions by id (each device's newest) and writes events in the same transaction,
# which locks every partition of both: the exclusive lock this DDL needs waits for the drains in flight
# (new ones are paused meanwhile), and for any long reader (a report): past this it steps aside, lets the
# drains go on, and tries again.
LOCK_TIMEOUT = "500ms"
LOCK_TRIES = 60
# The wait of tidying done while the drains are paused (the detached tables' foreign keys): past it, the
# tidying is left for later (drop_detached), not the drains held up (a sweep's chunk reading devices, say).
TIDY_LOCK_TIMEOUT = "50ms"
# A default partition normally holds few rows (positions': silent devices' newest); more is worth a look.
DEFAULT_WARN_ROWS = 100_000
# Pages a sweep deletes from in one transaction: about 60,000 positions, tens of milliseconds of work
# holding only row locks (writers of new positions never wait on them).
SWEEP_BLOCKS = 1024

T = TypeVar("T")

# What a detach writes on each table it takes out: drop_detached drops only tables that carry it.
DETACHED_MARK = "tracker_jobs: detached by retention, to be dropped"
_DETACHED_WHERE = (
    "relkind = 'r' AND NOT relispartition AND relnamespace = 'public'::regnamespace"
    " AND obj_description(oid, 'pg_class') = '" + DETACHED_MARK + "'"
)
_DETACHED = sa.text(f"SELECT relname FROM pg_class WHERE {_DETACHED_WHERE} AND relname ~ :pattern")  # noqa: S608
_DETACHED_ONE = sa.text(  # a row, or nothing when it is attached again or not the engine's
    f"SELECT 1 FROM pg_class WHERE {_DETACHED_WHERE} AND oid = to_regclass(:name)"  # noqa: S608
)


@dataclass(frozen=True)
class PartitionedTable:
    """A table range-partitioned by `time_column`, a partition a `period` (`{parent}_pYYYYMMDD`, named by
    its first day; a week starts on Monday), and `{parent}_default`."""

    parent: str
    time_column: str
    period: timedelta
    # The foreign keys each partition has a copy of: a detach drops them at once (see _detach).
    foreign_keys: tuple[str, ...]

    @property
    def default_partition(self) -> str:
        return f"{self.parent}_default"

    @functools.cached_property
    def _name(self) -> re.Pattern[str]:
        return re.compile(rf"{self.parent}_p(\d{{8}})")

    def start_of(self, day: date) -> date:
        """The first day of the partition that holds `day`."""
        return day - timedelta(days=day.weekday()) if self.period == WEEK else day

    def partition_name(self, day: date) -> str:
        """The name of the partition that holds `day`."""
        return f"{self.parent}_p{self.start_of(day):%Y%m%d}"

    def is_partition(self, name: str) -> bool:
        return name == self.default_partition or self._name.fullmatch(name) is not None

    def leaf(self, name: str) -> sa.TableClause:
        """The table or one of its partitions, with the columns retention's conditions name."""
        return sa.table(name, sa.column("id"), sa.column("device_id"), sa.column(self.time_column, UTCDateTime))

    def first_day(self, name: str) -> date | None:
        """The first day of the named partition; None for the default one."""
        found = self._name.fullmatch(name)
        return datetime.strptime(found.group(1), "%Y%m%d").date() if found else None


POSITIONS_BY_DAY = PartitionedTable("positions", "fix_time", DAY, ("fk_positions_device_id_devices",))
EVENTS_BY_WEEK = PartitionedTable(
    "events", "event_time", WEEK, ("fk_events_device_id_devices", "fk_events_geofence_id_geofences")
)
PARTITIONED_TABLES = (POSITIONS_BY_DAY, EVENTS_BY_WEEK)


def is_partition_table(name: str) -> bool:
    """A table that is one of the partitions (alembic's comparison of models and schema skips them)."""
    return any(table.is_partition(name) for table in PARTITIONED_TABLES)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True)
class Partition:
    name: str
    lower: datetime | None  # None: the default partition
    upper: datetime | None
    bytes: int
    rows_estimate: int  # the planner's statistics (ANALYZE); -1 before the first
    parent: str = POSITIONS_BY_DAY.parent

    @property
    def is_default(self) -> bool:
        return self.lower is None

    def to_api(self) -> dict[str, object]:
        return {
            "table": self.name,
            "of": self.parent,
            "from": self.lower.isoformat() if self.lower else None,
            "to": self.upper.isoformat() if self.upper else None,
            "default": self.is_default,
            "bytes": self.bytes,
            "rowsEstimate": max(self.rows_estimate, 0),
        }


async def is_partitioned(session: AsyncSession, table: PartitionedTable) -> bool:
    """Whether the table is partitioned here (PostgreSQL at a revision that partitions it)."""
    if dialect_name(session) != "postgresql":
        return False
    found = await session.execute(
        sa.text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:parent)"), {"parent": table.parent}
    )
    return found.first() is not None


async def list_partitions(session: AsyncSession, table: PartitionedTable) -> list[Partition]:
    """The table's partitions, oldest first, the default one last (none where it is not partitioned)."""
    if not await is_partitioned(session, table):
        return []
    rows = await session.execute(
        sa.text(
            "SELECT c.relname, pg_total_relation_size(c.oid), c.reltuples::bigint FROM pg_inherits AS i"
            " JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:parent)"
        ),
        {"parent": table.parent},
    )
    partitions = []
    for name, size, rows_estimate in rows:
        first = table.first_day(name)
        lower = day_start(first) if first else None
        upper = lower + table.period if lower else None
        partitions.append(Partition(name, lower, upper, int(size), int(rows_estimate), table.parent))
    return sorted(partitions, key=lambda p: (p.lower is None, p.lower or datetime.min.replace(tzinfo=UTC)))


async def ensure_partitions(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, today: date, ahead_days: int = AHEAD_DAYS
) -> dict[str, Any]:
    """Make the partitions of `today` and the `ahead_days` after it that do not exist, for each
    partitioned table; what was made, and how many rows each default partition holds (a warning when
    they pile up: see DEFAULT_WARN_ROWS)."""
    made: list[str] = []
    strays: dict[str, int] = {}
    for table in PARTITIONED_TABLES:
        async with sessions() as session:
            existing = {partition.name: partition for partition in await list_partitions(session, table)}
        if not existing:
            continue
        for day in sorted({table.start_of(today + offset * DAY) for offset in range(ahead_days + 1)}):
            if table.partition_name(day) not in existing:
                make = functools.partial(_create_partition, table, day)
                await _with_table_to_itself(sessions, redis, table.parent, make)
                made.append(table.partition_name(day))
        default = existing.get(table.default_partition)
        strays[table.default_partition] = max(default.rows_estimate, 0) if default else 0
        if strays[table.default_partition] > DEFAULT_WARN_ROWS:
            log.warning(
                "%s holds about %d rows that fit no partition (times far from the server's clock, or silent"
                " devices' newest positions): see GET /api/cleanup/status",
                table.default_partition,
                strays[table.default_partition],
            )
    if made:
        log.info("made partitions %s", ", ".join(made))
    return {"partitioned": bool(strays), "made": made, "default_rows_estimate": strays}


async def _create_partition(table: PartitionedTable, day: date, session: AsyncSession) -> None:
    """The partition starting on `day`; rows of its range already in the default partition move into it
    (PostgreSQL refuses a partition whose rows the default partition holds)."""
    name, lower = table.partition_name(day), day_start(day)
    upper = lower + table.period
    bounds = {"lower": lower, "upper": upper}
    in_range = f"{table.time_column} >= :lower AND {table.time_column} < :upper"
    strays = await session.execute(
        sa.text(f"SELECT 1 FROM {table.default_partition} WHERE {in_range} LIMIT 1"),  # noqa: S608 (our names)
        bounds,
    )
    if strays.first() is None:
        await session.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table.parent}"
                f" FOR VALUES FROM ('{lower}') TO ('{upper}')"
            )
        )
        return
    await session.execute(sa.text(f"CREATE TABLE {name} (LIKE {table.parent} INCLUDING DEFAULTS)"))
    move = f"DELETE FROM {table.default_partition} WHERE {in_range} RETURNING *"  # noqa: S608
    await session.execute(sa.text(f"WITH moved AS ({move}) INSERT INTO {name} SELECT * FROM moved"), bounds)  # noqa: S608
    await session.execute(
        sa.text(f"ALTER TABLE {table.parent} ATTACH PARTITION {name} FOR VALUES FROM ('{lower}') TO ('{upper}')")
    )


async def rows_of(sessions: async_sessionmaker[AsyncSession], partition: Partition) -> tuple[int, bool]:
    """How many rows the partition holds, and whether that is the planner's estimate: the estimate when
    the table has been analysed (autovacuum does so as a day fills), else counted (it is then small)."""
    if partition.rows_estimate >= 0:
        return partition.rows_estimate, True
    async with sessions() as session:
        counted = await session.execute(sa.select(sa.func.count()).select_from(sa.table(partition.name)))
        return int(counted.scalar_one()), False


async def detach_partitions(
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    table: PartitionedTable,
    partitions: list[Partition],
    committed: Callable[[], object] | None = None,
) -> int:
    """Detach partitions whose every row is past retention, all in one short transaction (the drains
    paused once): from its commit (when `committed` is called) their rows are out of the table. Of
    positions, each device's newest position in one (what `devices.position_id` names) is first copied
    into the default partition, keeping its id, so a silent device's last position stays readable: how
    many were kept so.
    Then, the drains still paused, the detached tables' foreign keys go, in a transaction of their own,
    if devices is free within TIDY_LOCK_TIMEOUT (else drop_detached drops them; see _detach).
    `drop_detached` then drops the tables, which gives their disk back."""
    if not partitions:
        return 0
    names = [partition.name for partition in partitions]
    return await _with_table_to_itself(
        sessions,
        redis,
        table.parent,
        functools.partial(_detach, table, partitions),
        then=functools.partial(_drop_foreign_keys, table, names),
        committed=committed,
    )


async def _detach(table: PartitionedTable, batch: list[Partition], session: AsyncSession) -> int:
    # At most three statements whatever the number of periods: the drains wait for this transaction, and
    # on a busy machine a round trip per table (a detach, a copy each) was most of that wait.
    names = [partition.name for partition in batch]
    # The detached tables keep their copies of the foreign keys until this commits: a detach takes only a
    # share lock on devices (reads of it, the sweeps' included, go on), where dropping a key takes its
    # exclusive lock, so that is done apart, briefly (DROP TABLE would take that lock for as long as giving
    # back the table's files takes, with the drains running).
    # Each is marked as the engine's to drop (drop_detached drops no other table, such as a day an
    # operator detached to keep).
    ddl = "".join(
        f"ALTER TABLE {table.parent} DETACH PARTITION {name}; COMMENT ON TABLE {name} IS '{DETACHED_MARK}'; "
        for name in names
    )
    await session.execute(sa.text(f"DO $$BEGIN {ddl}END$$"))
    if table is not POSITIONS_BY_DAY:
        return 0
    # Read with the table to ourselves (every drain in flight has ended): no newest position can move
    # into these days unseen. Their days now belong to no partition, so the copies land in the default one.
    # A device whose newest has no time on its row (none should: drains and migration 0008 set both) is
    # matched by the id alone. Usually no device's newest is that old: one look at devices says so, where
    # the copy's plan over every detached table would cost the paused drains tens of milliseconds.
    bounds = {"lower": min(p.lower for p in batch if p.lower), "upper": max(p.upper for p in batch if p.upper)}
    in_days = (
        "d.position_id IS NOT NULL AND (d.position_time IS NULL"
        " OR (d.position_time >= :lower AND d.position_time < :upper))"
    )
    found = await session.execute(sa.text(f"SELECT 1 FROM devices AS d WHERE {in_days} LIMIT 1"), bounds)  # noqa: S608
    if found.first() is None:
        return 0
    days = " UNION ALL ".join(f"SELECT * FROM {name}" for name in names)  # noqa: S608
    copied = await session.execute(
        sa.text(
            f"INSERT INTO {table.parent} SELECT p.* FROM devices AS d JOIN ({days}) AS p"  # noqa: S608
            f" ON p.id = d.position_id AND p.fix_time = coalesce(d.position_time, p.fix_time) WHERE {in_days}"
        ),
        bounds,
    )
    return int(copied.rowcount or 0)  # type: ignore[attr-defined]


async def drop_detached(sessions: async_sessionmaker[AsyncSession], redis: Redis, table: PartitionedTable) -> list[str]:
    """Drop the table's period tables a detach took out (and marked, see _detach): those just detached, or
    left by a run that was stopped between its detach and its drop (newest positions were copied out
    before). Any that still have foreign keys lose them first, all in one short transaction with the drains paused
    (dropping a key takes the exclusive lock of the table it refers to: devices, which every drain writes);
    then no one else locks them, so dropping them holds nothing up, however long giving back their files
    takes."""
    async with sessions() as session:
        names = list((await session.execute(_DETACHED, {"pattern": f"^{table.parent}_p[0-9]{{8}}$"})).scalars())
        # Normally their keys went right after the detach; a run stopped in between, or a busy moment,
        # left them.
        keyed = await session.execute(
            sa.text(
                "SELECT DISTINCT c.conrelid::regclass::text FROM pg_constraint AS c WHERE c.contype = 'f'"
                " AND c.conrelid IN (SELECT to_regclass(n) FROM unnest(CAST(:names AS text[])) AS n)"
            ),
            {"names": names},
        )
        with_keys = list(keyed.scalars())
    if with_keys:
        async with stream.drains_paused(redis):
            freed = await _if_free(sessions, functools.partial(_drop_foreign_keys, table, with_keys), LOCK_TIMEOUT)
        if not freed:  # the next run tries again
            names = [name for name in names if name not in with_keys]
    dropped = []
    # One a transaction (each commit gives back one period's files), back to back. With a pause after
    # each as long as giving back its bytes at 100 MB/s, bench/cleanup.py's ingest p99 over the whole run
    # was within 1.5x of before in 4 of 7 --quick runs and at 1.50x in a full one; without, in 5 of 7
    # and at 1.21x: a long spell of slightly slower writes costs the tail as much as a short one.
    for name in names:
        try:
            async with transaction(sessions) as session:
                # Only a reader of the detached table itself (none of the engine's) would hold it.
                await session.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                await session.execute(sa.text(f"LOCK TABLE {name}"))
                # Still detached and still ours, now that no one else can change it.
                still = await session.execute(_DETACHED_ONE, {"name": name})
                if still.scalar() is None:
                    continue
                await session.execute(sa.text(f"DROP TABLE {name}"))
        except DBAPIError as error:
            if not lock_timed_out(error):
                raise
            log.warning("detached table %s not dropped yet (busy): the next run drops it", name)
            continue
        dropped.append(name)
    return dropped


async def _drop_foreign_keys(table: PartitionedTable, names: list[str], session: AsyncSession) -> None:
    keys = "".join(
        f"ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {key}; " for name in names for key in table.foreign_keys
    )
    await session.execute(sa.text(f"DO $$BEGIN {keys}END$$"))


async def _holders(sessions: async_sessionmaker[AsyncSession], relation: str) -> str:
    """Who holds a lock on the table now (what a DDL waited on): for the log."""
    async with sessions() as session:
        rows = await session.execute(
            sa.text(
                "SELECT a.pid, a.state, round(extract(epoch FROM now() - a.xact_start)::numeric, 2),"
                " left(a.query, 80) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
                " WHERE l.relation = to_regclass(:parent) AND l.granted AND a.pid <> pg_backend_pid()"
            ),
            {"parent": relation},
        )
        return "; ".join(f"pid {pid} {state} for {age} s: {query}" for pid, state, age, query in rows) or "none now"


async def devices_in(session: AsyncSession, name: str) -> list[int]:
    """The devices with a row in the partition: one probe of its (device_id, fix_time) index per device
    (a loose index scan), however many rows each has."""
    rows = await session.execute(
        sa.text(
            f"WITH RECURSIVE present(device_id) AS ((SELECT device_id FROM {name} ORDER BY device_id LIMIT 1)"  # noqa: S608
            f" UNION ALL SELECT (SELECT p.device_id FROM {name} AS p WHERE p.device_id > present.device_id"
            " ORDER BY p.device_id LIMIT 1) FROM present WHERE present.device_id IS NOT NULL)"
            " SELECT device_id FROM present WHERE device_id IS NOT NULL"
        )
    )
    return list(rows.scalars())


async def holds_other_than_newest(session: AsyncSession, name: str, device_id: int) -> bool:
    """Whether the partition holds a row of the device other than its newest position."""
    found = await session.execute(
        sa.text(
            f"SELECT 1 FROM {name} WHERE device_id = :device AND id IS DISTINCT FROM"  # noqa: S608
            " (SELECT position_id FROM devices WHERE id = :device) LIMIT 1"
        ),
        {"device": device_id},
    )
    return found.first() is not None


async def sweep_partition(
    sessions: async_sessionmaker[AsyncSession], leaf: sa.TableClause, condition: sa.ColumnElement[bool]
) -> int:
    """Delete the partition's rows that match, walking it once in ranges of SWEEP_BLOCKS pages by ctid
    (a TID range scan reads just those pages), one short transaction a range: for a day partition, one
    pass over its pages wherever its old rows lie, where chunks found through an index would each read
    again the dead rows of the chunks before them. How many went."""
    async with sessions() as session:
        pages = (
            await session.execute(
                sa.text("SELECT pg_relation_size(to_regclass(:name)) / current_setting('block_size')::int"),
                {"name": leaf.name},
            )
        ).scalar_one()
    removed = 0
    for first in range(0, int(pages), SWEEP_BLOCKS):
        in_range = sa.text("ctid >= CAST(:low AS tid) AND ctid < CAST(:high AS tid)").bindparams(
            low=f"({first},0)", high=f"({first + SWEEP_BLOCKS},0)"
        )
        async with transaction(sessions) as session:
            result = await session.execute(sa.delete(leaf).where(in_range, condition))
        removed += int(result.rowcount or 0)  # type: ignore[attr-defined]
        await asyncio.sleep(0)
    return removed


async def _with_table_to_itself(
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    relation: str,
    work: Callable[[AsyncSession], Awaitable[T]],
    then: Callable[[AsyncSession], Awaitable[object]] | None = None,
    committed: Callable[[], object] | None = None,
) -> T:
    """Run DDL that needs the exclusive lock of `relation` (positions, events, devices: tables the drains
    write) in its own transaction, the drains paused (stream.drains_paused) and a lock timeout; when a
    reader holds the table past it, let the drains go on and try again a moment later. `then`, in a
    transaction of its own before the drains go on (no drain in flight to wait for), is tidying that may
    be left for later: a lock it cannot have in time is not waited for. `committed` is called as soon as
    the work is committed, before `then`."""
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            async with sessions() as session:
                # Begun before the pause (a connection from the pool, BEGIN, the timeout: round trips the
                # paused drains need not wait for).
                await session.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                async with stream.drains_paused(redis):
                    try:
                        done = await work(session)
                    except BaseException:
                        await session.rollback()  # its locks go before the drains do
                        raise
                    await session.commit()
                    if committed is not None:
                        committed()
                    if then is not None:
                        await _if_free(sessions, then)
                return done
        except DBAPIError as error:
            if not lock_timed_out(error) or attempt == LOCK_TRIES:
                raise
            holders = await _holders(sessions, relation)
            log.warning("%s table busy (attempt %d), held by: %s", relation, attempt, holders)
            await asyncio.sleep(min(0.2 * attempt, 2.0))  # the drains held up meanwhile catch up
    raise AssertionError("unreachable")


async def _if_free(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[object]],
    lock_timeout: str = TIDY_LOCK_TIMEOUT,
) -> bool:
    """Tidying that may be left for later: run `work` in its own transaction unless a lock it needs is
    held past `lock_timeout` or it fails (both logged); whether it ran."""
    try:
        async with transaction(sessions) as session:
            await session.execute(sa.text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
            await work(session)
    except DBAPIError as error:
        log.log(logging.INFO if lock_timed_out(error) else logging.WARNING, "left for later: %s", error.orig)
        return False
    return True
