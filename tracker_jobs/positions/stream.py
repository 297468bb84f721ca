"""The partitioned Redis streams accepted positions wait in, and the per-partition drain lock.

Why it is race-free: an accepted position is XADDed, then `schedule_drain` sets the partition's
"scheduled" flag with NX and enqueues a drain job only when it set it. A drain job clears the flag
*before* it reads, so every entry added before a failed NX is read by the job that owns the flag.
The lock makes one partition's drains run one at a time, which keeps each device's positions in
order; a drainer that died leaves its entries pending, and the next lock holder claims them all.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

GROUP = "store"
LOCK_TTL_MS = 60_000
# A flag whose enqueue never happened (Redis lost in between) must not block a partition for good;
# an extra drain job after it expires finds nothing and ends.
SCHEDULED_TTL_S = 120
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def stream_key(partition: int) -> str:
    return f"tracker:positions:{partition}"


def scheduled_key(partition: int) -> str:
    return f"tracker:positions:{partition}:scheduled"


def lock_key(partition: int) -> str:
    return f"tracker:positions:{partition}:lock"


def partition_of(device_id: int, partitions: int) -> int:
    return device_id % partitions


async def ensure_group(redis: Redis, partition: int) -> None:
    try:
        # From "0": entries accepted before the first worker ever started are read too.
        await redis.xgroup_create(stream_key(partition), GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


async def append(redis: Redis, entries: dict[int, list[bytes]]) -> list[int]:
    """XADD encoded positions to their partitions in one round trip; return the partitions whose
    "scheduled" flag this call set (they need a drain job)."""
    async with redis.pipeline(transaction=False) as pipe:
        for partition, payloads in entries.items():
            key = stream_key(partition)
            for payload in payloads:
                pipe.xadd(key, {"p": payload})
        partitions = list(entries)
        for partition in partitions:
            pipe.set(scheduled_key(partition), b"1", nx=True, ex=SCHEDULED_TTL_S)
        results = await pipe.execute()
    flags = results[-len(partitions) :] if partitions else []
    return [partition for partition, was_set in zip(partitions, flags, strict=True) if was_set]


async def unscheduled_backlog(redis: Redis, partitions: int) -> list[int]:
    """Partitions holding entries and no drain job yet; their flag is now set (the sweep uses it)."""
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.xlen(stream_key(partition))
        lengths = await pipe.execute()
    waiting = [partition for partition, length in enumerate(lengths) if length]
    if not waiting:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for partition in waiting:
            pipe.set(scheduled_key(partition), b"1", nx=True, ex=SCHEDULED_TTL_S)
        flags = await pipe.execute()
    return [partition for partition, was_set in zip(waiting, flags, strict=True) if was_set]


class PartitionLock:
    """Exclusive right to drain one partition; refreshed as batches go by."""

    def __init__(self, redis: Redis, partition: int) -> None:
        self.redis = redis
        self.key = lock_key(partition)
        self.token = uuid.uuid4().hex

    async def acquire(self, wait_s: float) -> bool:
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            if await self.redis.set(self.key, self.token, nx=True, px=LOCK_TTL_MS):
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def refresh(self) -> None:
        await self.redis.pexpire(self.key, LOCK_TTL_MS)

    async def release(self) -> None:
        await self.redis.eval(_RELEASE, 1, self.key, self.token)  # type: ignore[misc]


async def read_batch(redis: Redis, partition: int, consumer: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The lock holder's next batch: first every unacknowledged entry (a drainer died or failed
    holding them), then new ones."""
    key = stream_key(partition)
    claimed: Any = await redis.xautoclaim(key, GROUP, consumer, min_idle_time=0, start_id="0-0", count=count)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = [entry for entry in claimed[1] if entry[1] is not None]
    if entries:
        return entries
    fresh: Any = await redis.xreadgroup(GROUP, consumer, {key: ">"}, count=count)
    return list(fresh[0][1]) if fresh else []


async def acknowledge(redis: Redis, partition: int, entry_ids: list[bytes]) -> None:
    key = stream_key(partition)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(key, GROUP, *entry_ids)
        pipe.xdel(key, *entry_ids)
        await pipe.execute()
