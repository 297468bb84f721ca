"""What `GET /api/cleanup/status` shows an admin: the big tables' sizes and row estimates, the positions'
and events' partitions (the default ones included) with their ranges and sizes, the oldest position, and what the next
retention run would remove. Sizes, row estimates and the partitions come from the catalogue; the oldest
position from one index probe per device; what the next run would delete row by row is counted (it reads
the days it would sweep: the boundary day, the default partition, days kept for some devices)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from tracker_jobs.cleanup import retention
from tracker_jobs.cleanup.chunks import count_rows
from tracker_jobs.cleanup.optimize import BIG_TABLES
from tracker_jobs.cleanup.partitions import (
    EVENTS_BY_WEEK,
    PARTITIONED_TABLES,
    POSITIONS_BY_DAY,
    Partition,
    PartitionedTable,
    list_partitions,
)
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import dialect_name
from tracker_jobs.devices.models import Device
from tracker_jobs.positions.models import Position


async def cleanup_status(session: AsyncSession, settings: Settings, now: datetime) -> dict[str, Any]:
    partitions = [partition for table in PARTITIONED_TABLES for partition in await list_partitions(session, table)]
    return {
        "database": dialect_name(session),
        "tables": [await _table_size(session, name) for name in BIG_TABLES],
        "partitions": [partition.to_api() for partition in partitions],
        "oldestPosition": _iso(await _oldest_position(session)),
        "retention": {
            "positionsDays": settings.retention_positions_days,
            "eventsDays": settings.retention_events_days,
        },
        "nextRun": await _next_run(session, settings, now, partitions),
    }


async def _table_size(session: AsyncSession, name: str) -> dict[str, Any]:
    """Bytes on disk (indexes included) and rows: estimates on PostgreSQL (a partitioned table summed over
    its partitions), exact on SQLite (the embedded database is small enough to count)."""
    if dialect_name(session) == "postgresql":
        size, rows = (
            await session.execute(
                sa.text(
                    "SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0), coalesce(sum(greatest(c.reltuples, 0)), 0)"
                    " FROM pg_partition_tree(to_regclass(:name)) AS t JOIN pg_class AS c ON c.oid = t.relid"
                ),
                {"name": name},
            )
        ).one()
    else:
        table = sa.table(name)
        rows = (await session.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
        size = await _sqlite_bytes(session, name)
    return {"table": name, "bytes": None if size is None else int(size), "rowsEstimate": int(rows)}


async def _sqlite_bytes(session: AsyncSession, name: str) -> int | None:
    """From the dbstat table, which some SQLite builds leave out: None there."""
    try:
        async with session.begin_nested():
            found = await session.execute(
                sa.text("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = :name"), {"name": name}
            )
            return int(found.scalar_one())
    except sa.exc.OperationalError:
        return None


async def _oldest_position(session: AsyncSession) -> datetime | None:
    """The oldest fix: each device's first through the (device_id, fix_time) index, the least of them."""
    first = (
        select(sa.func.min(Position.fix_time))
        .where(col(Position.device_id) == Device.id)
        .correlate(Device)
        .scalar_subquery()
    )
    oldest: datetime | None = (await session.execute(sa.select(sa.func.min(first)).select_from(Device))).scalar()
    return oldest


async def _next_run(
    session: AsyncSession, settings: Settings, now: datetime, partitions: list[Partition]
) -> dict[str, Any]:
    """What retention would remove now: whole partitions (their estimated rows), then rows one by one
    (counted; the rows of the partitions it would drop are estimated, not counted again)."""
    plan = await retention.plan_positions(session, now, settings.retention_positions_days)
    in_chunks = await _count_kept_partitions(session, POSITIONS_BY_DAY, plan.to_drop, plan.retention.expired)
    events_cutoff = retention.cutoff_of(now, settings.retention_events_days)
    weeks: list[Partition] = []
    events = 0
    if events_cutoff is not None:
        weeks = [p for p in partitions if p.parent == EVENTS_BY_WEEK.parent and p.upper and p.upper <= events_cutoff]
        events = await _count_kept_partitions(
            session, EVENTS_BY_WEEK, weeks, lambda table: table.c.event_time < events_cutoff
        )
    return {
        **plan.details(),
        "positionsInPartitionsEstimate": _rows_estimate(plan.to_drop),
        "positionsInChunks": int(in_chunks),
        "eventsCutoff": _iso(events_cutoff),
        "eventPartitions": [partition.name for partition in weeks],
        "eventsInPartitionsEstimate": _rows_estimate(weeks),
        "eventsInChunks": int(events),
    }


async def _count_kept_partitions(
    session: AsyncSession,
    table: PartitionedTable,
    dropped: list[Partition],
    condition: Callable[[sa.TableClause], sa.ColumnElement[bool]],
) -> int:
    """Rows that match, but for those of the partitions to be dropped (estimated, not counted again): the
    rows after the last of them, and those of the default partition before it. Both bounds let the planner
    prune to the partitions counted; excluding the dropped ones by their tableoid would read every row."""
    whole = table.leaf(table.parent)
    end = max((partition.upper for partition in dropped if partition.upper), default=None)
    if end is None:
        return await count_rows(session, whole, condition(whole))
    later = await count_rows(session, whole, sa.and_(condition(whole), whole.c[table.time_column] >= end))
    default = table.leaf(table.default_partition)
    earlier = await count_rows(session, default, sa.and_(condition(default), default.c[table.time_column] < end))
    return later + earlier


def _rows_estimate(partitions: list[Partition]) -> int:
    return sum(max(partition.rows_estimate, 0) for partition in partitions)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
