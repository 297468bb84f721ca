"""Enqueue after commit: a job that reads what its transaction writes is enqueued only once that is
committed, and never when the transaction rolls back."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.core.db import AfterCommitFailed, after_commit, transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.jobs.base import enqueue_after_commit, queue_key
from tracker_jobs.jobs.refs import PING


async def waiting(redis: ArqRedis) -> int:
    return int(await redis.zcard(queue_key(PING.queue)))


async def test_a_rolled_back_transaction_enqueues_nothing(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    async def write_then_change_mind() -> None:
        async with transaction(sessions) as session:
            session.add(Device(unique_id="never", name="never"))
            enqueue_after_commit(session, redis, PING, seconds=0)
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await write_then_change_mind()
    assert await waiting(redis) == 0


async def test_the_job_is_enqueued_once_what_it_reads_is_committed(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    seen_by_another_session: list[int] = []

    async def look() -> None:  # runs where the enqueue runs: a reader elsewhere must see the row by then
        async with sessions() as other:
            seen_by_another_session.append(
                (await other.execute(sa.select(sa.func.count()).select_from(Device))).scalar_one()
            )

    async with transaction(sessions) as session:
        session.add(Device(unique_id="written", name="written"))
        after_commit(session, look)
        enqueue_after_commit(session, redis, PING, seconds=0)
        assert await waiting(redis) == 0  # not before the commit
    assert seen_by_another_session == [1]
    assert await waiting(redis) == 1


async def test_a_failure_after_the_commit_says_the_commit_stands(sessions: async_sessionmaker[AsyncSession]) -> None:
    async def fail() -> None:
        raise ConnectionError("Redis went away")

    async def write_then_fail_after() -> None:
        async with transaction(sessions) as session:
            session.add(Device(unique_id="kept", name="kept"))
            after_commit(session, fail)

    with pytest.raises(AfterCommitFailed) as raised:
        await write_then_fail_after()
    assert isinstance(raised.value.__cause__, ConnectionError)
    async with sessions() as session:
        assert (await session.execute(sa.select(Device.unique_id))).scalars().all() == ["kept"]
