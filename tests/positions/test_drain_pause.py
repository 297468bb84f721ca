"""The drains' pause for table DDL (positions/stream.py): it lasts while any holder is inside it, goes
with the last one, and a holder that dies holds the drains up until its deadline at most."""

from __future__ import annotations

import asyncio
import time

from arq.connections import ArqRedis

from tracker_jobs.positions.stream import DRAINS_PAUSED_KEY, drains_paused, wait_while_paused


async def test_the_drains_stay_paused_until_every_holder_is_done(redis: ArqRedis) -> None:
    async with drains_paused(redis):
        async with drains_paused(redis, max_s=0.2):  # a second holder (the partition maker beside a retention run)
            pass
        waiting = asyncio.create_task(wait_while_paused(redis))
        await asyncio.sleep(0.5)  # past the second holder's deadline too
        assert not waiting.done()  # the first holder is still inside
    await asyncio.wait_for(waiting, timeout=2)
    assert await redis.zcard(DRAINS_PAUSED_KEY) == 0


async def test_a_holder_that_died_holds_the_drains_until_its_deadline_at_most(redis: ArqRedis) -> None:
    held = drains_paused(redis, max_s=0.5)
    await held.__aenter__()  # never left: its process was killed
    started = time.monotonic()

    await asyncio.wait_for(wait_while_paused(redis), timeout=3)

    assert 0.3 < time.monotonic() - started < 1.5
    del held
