"""Orphans: rows that point at a row that is gone, and positions set aside long ago.

Both databases enforce every foreign key, so on a healthy database this finds nothing and says so (each
key checked, with a count of 0). It is for a database restored from a dump, or written by hand or by an
old version with foreign keys off (SQLite's are off unless each connection turns them on), where a row
can name a parent that no longer exists; left there, it would fail a later write or show up in a report.

The keys are read from the schema's metadata, so a table added later is covered without an edit here.
What happens to an orphan is what its key says should have happened when the parent went: deleted
(CASCADE, and any other rule: the row means nothing without its parent), or its column set to NULL
(SET NULL). Children are checked after their parents (the metadata's dependency order), so the rows
orphaned by an orphan's removal (a maintenance's device links, say) go in the same run. A dry run
counts each key's orphans as the database stands, so it leaves out those second-hand ones.

The set-aside stream holds the positions the pipeline could not store (positions/stream.py); entries
older than the retention are trimmed, by id, which is their time in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel

from tracker_jobs.cleanup.chunks import CHUNK_ROWS, CleanupRun, count_rows, delete_in_chunks
from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.positions.stream import SET_ASIDE_KEY

# Entries read per XRANGE when a dry run counts the set-aside entries it would trim.
STREAM_PAGE = 1000


@dataclass(frozen=True)
class ForeignKey:
    """One single-column key from `table.column` to another table's `id`."""

    table: sa.Table
    column: sa.Column[Any]
    parent: sa.Table
    set_null: bool

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"

    def orphaned(self) -> sa.ColumnElement[bool]:
        """The rows whose column names a parent that does not exist."""
        parent_row = sa.select(self.parent.c.id).where(self.parent.c.id == self.column)
        return sa.and_(self.column.is_not(None), ~parent_row.exists())

    def repair(self) -> sa.Update | sa.Delete:
        """What the key's ON DELETE would have done to the row when its parent went."""
        if self.set_null:
            return sa.update(self.table).values({self.column.name: None})
        return sa.delete(self.table)


def foreign_keys() -> Iterator[ForeignKey]:
    """Every single-column key to another table's `id`, parents' tables first. SQLModel.metadata is
    tracker_jobs.models.metadata (a layer above cleanup, so not imported here): the worker has imported
    every domain's models through its jobs by the time a cleanup runs."""
    for table in SQLModel.metadata.sorted_tables:
        for constraint in table.foreign_key_constraints:
            if len(constraint.elements) != 1:
                continue
            element = constraint.elements[0]
            parent = element.column.table
            if parent is table or element.column.name != "id" or not isinstance(parent, sa.Table):
                continue
            yield ForeignKey(table, element.parent, parent, (constraint.ondelete or "").upper() == "SET NULL")


async def clean_orphans(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, run: CleanupRun, *, set_aside_days: int
) -> dict[str, Any]:
    """Remove (or null) the rows whose parent is gone, and trim set-aside entries older than
    `set_aside_days` (0: keep them for ever); every key checked is counted, 0 when it found nothing."""
    keys = list(foreign_keys())
    total = len(keys) + 1
    for done, key in enumerate(keys, start=1):
        async with run.step(key.name):
            run.count(key.name, await _clean_key(sessions, key, dry_run=run.dry_run))
        await run.progress(done, total, f"checked {key.name}")
    async with run.step("set_aside_entries"):
        message = await _trim_set_aside(redis, run, set_aside_days)
    await run.progress(total, total, message)
    return run.result()


async def _clean_key(sessions: async_sessionmaker[AsyncSession], key: ForeignKey, *, dry_run: bool) -> int:
    condition = key.orphaned()
    if dry_run:
        async with transaction(sessions) as session:
            return await count_rows(session, key.table, condition)
    if "id" not in key.table.c:
        # A link table (a composite primary key, no `id`) holds a few rows per user or device: one statement.
        async with transaction(sessions) as session:
            result = await session.execute(key.repair().where(condition))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
    if key.set_null:
        return await _null_in_chunks(sessions, key, condition)
    return await delete_in_chunks(sessions, key.table, condition)


async def _null_in_chunks(
    sessions: async_sessionmaker[AsyncSession], key: ForeignKey, condition: sa.ColumnElement[bool]
) -> int:
    """Set the column to NULL, CHUNK_ROWS rows per transaction as delete_in_chunks deletes (events can
    be many): a nulled row no longer matches, so each round takes the next ones."""
    nulled = 0
    while True:
        chosen = sa.select(key.table.c.id).where(condition).limit(CHUNK_ROWS).scalar_subquery()
        async with transaction(sessions) as session:
            result = await session.execute(key.repair().where(key.table.c.id.in_(chosen)))
        done = int(result.rowcount or 0)  # type: ignore[attr-defined]
        nulled += done
        if done < CHUNK_ROWS:
            return nulled


async def _trim_set_aside(redis: Redis, run: CleanupRun, set_aside_days: int) -> str:
    """Trim (or, on a dry run, count) the set-aside entries older than the retention; what was done."""
    if set_aside_days <= 0:
        return "set-aside entries kept for ever"
    cutoff_ms = int((utcnow() - timedelta(days=set_aside_days)).timestamp() * 1000)
    if run.dry_run:
        older = await _count_older(redis, cutoff_ms)
    else:
        # MINID, not MAXLEN: the retention is an age, and an entry's id is the millisecond it was added.
        # Exact, not redis-py's default `~`, which keeps whole nodes of up to 100 entries past the cutoff.
        older = int(await redis.xtrim(SET_ASIDE_KEY, minid=cutoff_ms, approximate=False))
    run.count("set_aside_entries", older)
    return f"set-aside entries older than {set_aside_days} days: {older}"


async def _count_older(redis: Redis, cutoff_ms: int) -> int:
    """The entries whose id is below `cutoff_ms`, read a page at a time so a long stream is never
    held in memory whole (an end id of cutoff_ms - 1 takes every sequence number of that millisecond)."""
    counted, start = 0, "-"
    while True:
        page = await redis.xrange(SET_ASIDE_KEY, min=start, max=str(cutoff_ms - 1), count=STREAM_PAGE)
        counted += len(page)
        if len(page) < STREAM_PAGE:
            return counted
        last_id = page[-1][0]
        start = "(" + (last_id.decode() if isinstance(last_id, bytes) else str(last_id))
