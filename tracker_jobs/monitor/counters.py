"""Engine-wide counters in Redis (positions accepted, rejected, stored, ...), shared by every process.

They are plain Redis integers under one hash, so any process can add to them and /metrics reads
them with one HGETALL.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

COUNTERS_KEY = "tracker:counters"
POSITIONS_ACCEPTED = "positions_accepted"
POSITIONS_REJECTED = "positions_rejected"
POSITIONS_STORED = "positions_stored"
POSITIONS_DROPPED = "positions_dropped"  # filtered by the pipeline (duplicates, jumps, ...)


def add_counts(pipe: Pipeline, counts: Mapping[str, int]) -> None:
    """Queue the increments on a pipeline the caller executes (no extra round trip)."""
    for name, amount in counts.items():
        if amount:
            pipe.hincrby(COUNTERS_KEY, name, amount)


async def count(redis: Redis, counts: Mapping[str, int]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        add_counts(pipe, counts)
        await pipe.execute()


async def read_counts(redis: Redis) -> dict[str, int]:
    raw: dict[bytes, bytes] = await redis.hgetall(COUNTERS_KEY)  # type: ignore[misc]
    return {name.decode(): int(value) for name, value in raw.items()}
