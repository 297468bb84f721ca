"""Reads outside a transaction (core.db.reading): a table read is not held once its statement is done,
so table DDL (a partition detached by retention) never waits on a reader that is busy elsewhere.
PostgreSQL only: SQLite's driver opens no transaction for a read in either case."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.core.db import reading, transaction

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


async def devices_locks_of(sessions: async_sessionmaker[AsyncSession], session: AsyncSession) -> int:
    """How many locks on devices `session`'s connection holds, seen from another connection."""
    pid = (await session.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
    async with sessions() as other:
        held = await other.execute(
            sa.text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND relation = to_regclass('devices')"),
            {"pid": pid},
        )
        return int(held.scalar_one())


async def test_a_read_holds_no_lock_between_statements(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with reading(sessions) as session:
        await session.execute(sa.text("SELECT count(*) FROM devices"))
        assert await devices_locks_of(sessions, session) == 0


async def test_a_transaction_holds_what_it_read_until_it_ends(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The contrast, so the test above can fail: the same read inside a transaction keeps its lock."""
    async with transaction(sessions) as session:
        await session.execute(sa.text("SELECT count(*) FROM devices"))
        assert await devices_locks_of(sessions, session) == 1
