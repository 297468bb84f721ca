"""What every cleanup job shares: progress as it goes, the time each step took, what it removed (or, on a
dry run, would remove), and deleting in chunks: a few thousand rows per short transaction, so a writer
never waits long behind a cleanup and a cancelled or killed run leaves only whole chunks done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.core.db import transaction
from tracker_jobs.devices.models import Device

DEVICES: sa.Table = Device.__table__  # type: ignore[attr-defined]

# (done, total, message): called between chunks; a job passes jobs.progress.report_progress bound to its ctx.
Progress = Callable[[int, int, str], Awaitable[None]]

# Devices whose rows one statement walks at a time (through the (device_id, time) index): a fleet of
# thousands takes tens of statements, each well within a second on a busy database.
DEVICES_PER_GROUP = 200

# Rows per transaction: large enough that a chunk's fixed cost is small, small enough that it holds its
# locks (and, on SQLite, the one write lock) for tens of milliseconds.
CHUNK_ROWS = 5000


async def no_progress(done: int, total: int, message: str) -> None:
    """A Progress for callers that do not report (tests, the command line)."""


@dataclass
class CleanupRun:
    """One cleanup's account: what it removed (or would), and how long each step took."""

    progress: Progress = no_progress
    dry_run: bool = False
    removed: dict[str, int] = field(default_factory=dict)
    steps_s: dict[str, float] = field(default_factory=dict)

    def count(self, what: str, rows: int) -> None:
        self.removed[what] = self.removed.get(what, 0) + rows

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.steps_s[name] = round(self.steps_s.get(name, 0.0) + time.perf_counter() - started, 3)

    def result(self, **details: Any) -> dict[str, Any]:
        """The job's result: `removed` (or `would_remove` on a dry run), per table, and the steps' times."""
        return {
            "dry_run": self.dry_run,
            "would_remove" if self.dry_run else "removed": dict(self.removed),
            **details,
            "steps_s": dict(self.steps_s),
        }


async def delete_in_chunks(
    sessions: async_sessionmaker[AsyncSession],
    table: sa.Table,
    condition: sa.ColumnElement[bool],
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Delete the rows of `table` (keyed by `id`) that match `condition`, `chunk_rows` per transaction;
    how many went. Each chunk's ids come from a bounded select, so the condition should be one an index
    answers (a device and a time, say); the condition is repeated on the delete so that PostgreSQL
    prunes a partitioned table to the partitions it can match."""
    removed = 0
    while True:
        chosen = sa.select(table.c.id).where(condition).limit(chunk_rows).scalar_subquery()
        async with transaction(sessions) as session:
            result = await session.execute(sa.delete(table).where(table.c.id.in_(chosen), condition))
        done = int(result.rowcount or 0)  # type: ignore[attr-defined]
        removed += done
        if done < chunk_rows:
            return removed
        await asyncio.sleep(0)  # let the process's other work in between chunks


def in_groups(device_ids: Sequence[int]) -> list[list[int]]:
    """The ids, DEVICES_PER_GROUP at a time."""
    return [
        list(device_ids[start : start + DEVICES_PER_GROUP]) for start in range(0, len(device_ids), DEVICES_PER_GROUP)
    ]


async def device_ids(sessions: async_sessionmaker[AsyncSession], only: Sequence[int] | None = None) -> list[int]:
    """Every device's id (or those of `only` that exist), in order."""
    query = sa.select(DEVICES.c.id).order_by(DEVICES.c.id)
    if only is not None:
        query = query.where(DEVICES.c.id.in_(only))
    async with sessions() as session:
        return list((await session.execute(query)).scalars())


async def count_rows(session: AsyncSession, table: sa.TableClause, condition: sa.ColumnElement[bool]) -> int:
    """How many rows of `table` match: what a dry run reports."""
    return int((await session.execute(sa.select(sa.func.count()).select_from(table).where(condition))).scalar_one())
