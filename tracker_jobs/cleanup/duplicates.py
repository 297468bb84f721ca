"""Duplicate positions: the same device at the same place in the same second, stored more than once.

Ingest refuses an exact repeat (positions are unique by device and fix time), so this normally finds
none and says so. What it catches is a tracker that resends a fix with a slightly different sub-second
time (a retry after a lost acknowledgement, a protocol that rounds differently on resend): two rows for
one fix, which double the fix in a report's point count and add a zero-length step to its trips.

Of each set of repeats one row stays: the one the device's `position_id` names (its latest position,
which the API and live view read), otherwise the oldest row (the lowest id). Devices are walked in
groups in id order, so each group's query walks the (device_id, fix_time) index for its devices only,
each group's delete is one short transaction, and progress is reported as groups finish. The rows are
deleted by id, which works on the plain table (SQLite) and on the partitioned one (PostgreSQL) alike.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.cleanup import chunks
from tracker_jobs.cleanup.chunks import CleanupRun
from tracker_jobs.core.db import dialect_name, transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.positions.models import Position

_POSITIONS: sa.Table = Position.__table__  # type: ignore[attr-defined]
_DEVICES: sa.Table = Device.__table__  # type: ignore[attr-defined]


async def clean_duplicate_positions(
    sessions: async_sessionmaker[AsyncSession], run: CleanupRun, *, device_ids: list[int] | None = None
) -> dict[str, Any]:
    """Remove (or, on a dry run, count) the repeats of each device's positions: every device's, or
    those of `device_ids`."""
    devices = await chunks.device_ids(sessions, device_ids)
    groups = chunks.in_groups(devices)
    run.count("positions", 0)  # so a run that found none says so
    for done, group in enumerate(groups, start=1):
        async with run.step("positions"):
            run.count("positions", await _clean_group(sessions, group, dry_run=run.dry_run))
        await run.progress(done, len(groups), f"checked devices up to id {group[-1]}")
    return run.result(devices=len(devices))


async def _clean_group(sessions: async_sessionmaker[AsyncSession], group: list[int], *, dry_run: bool) -> int:
    """The group's repeats, deleted (or counted) in one statement and one short transaction."""
    async with transaction(sessions) as session:
        ranked = _ranked(session, group)
        repeats = sa.select(ranked.c.id).where(ranked.c.rank > 1)
        if dry_run:
            counted = sa.select(sa.func.count()).select_from(repeats.subquery())
            return int((await session.execute(counted)).scalar_one())
        result = await session.execute(sa.delete(_POSITIONS).where(_POSITIONS.c.id.in_(repeats)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _ranked(session: AsyncSession, group: list[int]) -> sa.Subquery:
    """The group's positions numbered within each set of repeats, 1 for the one to keep."""
    kept_first = sa.case((_POSITIONS.c.id == _DEVICES.c.position_id, 0), else_=1)  # NULL position_id: 1
    repeat = (_POSITIONS.c.device_id, _fix_second(session), _POSITIONS.c.latitude, _POSITIONS.c.longitude)
    rank = sa.func.row_number().over(partition_by=repeat, order_by=(kept_first, _POSITIONS.c.id))
    return (
        sa.select(_POSITIONS.c.id, rank.label("rank"))
        .join_from(_POSITIONS, _DEVICES, _DEVICES.c.id == _POSITIONS.c.device_id)
        .where(_POSITIONS.c.device_id.in_(group))
        .subquery()
    )


def _fix_second(session: AsyncSession) -> sa.ColumnElement[Any]:
    """The fix time cut to the whole second. SQLite holds it as text, 'YYYY-MM-DD HH:MM:SS.ffffff'
    (UTC, naive), so its first 19 characters are the second."""
    if dialect_name(session) == "postgresql":
        return sa.func.date_trunc("second", _POSITIONS.c.fix_time)
    return sa.func.substr(_POSITIONS.c.fix_time, 1, 19)
