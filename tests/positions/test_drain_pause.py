"""The drains' pause for table DDL (positions/stream.py): it lasts while any holder is inside it, and
goes with the last one."""

from __future__ import annotations

import asyncio

from arq.connections import ArqRedis

from tracker_jobs.positions.stream import DRAINS_PAUSED_KEY, drains_paused, wait_while_paused


async def test_the_drains_stay_paused_until_every_holder_is_done(redis: ArqRedis) -> None:
    async with drains_paused(redis):
        async with drains_paused(redis):  # a second holder (the partition maker beside a retention run)
            pass
        waiting = asyncio.create_task(wait_while_paused(redis))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # the first holder is still inside
    await asyncio.wait_for(waiting, timeout=2)
    assert await redis.exists(DRAINS_PAUSED_KEY) == 0
