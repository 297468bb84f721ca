"""clean_cache reaches only the cache namespace, removes by idle time and by device, counts the same on a
dry run, and check_cache_pattern refuses patterns that are not plain globs inside the namespace."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.factories import add_device
from tracker_jobs.cleanup.cache import check_cache_pattern, clean_cache
from tracker_jobs.cleanup.chunks import CleanupRun
from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.redis import cache_key
from tracker_jobs.devices.keys import live_key, rate_key
from tracker_jobs.jobs.progress import progress_key
from tracker_jobs.notifications.web import recent_key
from tracker_jobs.positions.statistics import statistics_key

START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
# Keys outside the cache namespace, each of a kind a cleanup must never touch.
NOT_CACHE = [
    "tracker:queue:positions",
    "tracker:positions:0",
    "tracker:positions:0:lock",
    "arq:job:x",
    rate_key(7),
    "tracker:cached:1",  # begins like the namespace, without its prefix
]


async def add_other_keys(redis: ArqRedis) -> None:
    await redis.zadd("tracker:queue:positions", {"job": 1})
    await redis.xadd("tracker:positions:0", {"position": "{}"})
    await redis.set("tracker:positions:0:lock", "worker")
    await redis.set("arq:job:x", "job")
    await redis.set(rate_key(7), 1)
    await redis.set("tracker:cached:1", 1)


async def add_cache_keys(redis: ArqRedis, device: int) -> list[str]:
    keys = [live_key(device), statistics_key(device, START, END), progress_key("x"), recent_key(3), cache_key("misc")]
    await redis.hset(keys[0], mapping={"fix": 1, "position": "{}"})
    await redis.set(keys[1], "{}")
    await redis.hset(keys[2], mapping={"percent": 50})
    await redis.lpush(keys[3], "{}")
    await redis.set(keys[4], "{}")
    return keys


# Every kind but a device's live state, which stays while its device exists, however idle.
EVERY_IDLE_KIND = {
    "cache:device-stats": 1,
    "cache:job-progress": 1,
    "cache:recent-notifications": 1,
    "cache:other": 1,
}


async def test_removes_cache_keys_only(redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]) -> None:
    device = await add_device(sessions, "cache-1")
    await add_other_keys(redis)
    cache = await add_cache_keys(redis, device)
    reported: list[tuple[int, int]] = []

    async def progress(done: int, total: int, message: str) -> None:
        reported.append((done, total))

    result = await clean_cache(redis, sessions, CleanupRun(progress=progress), max_age_hours=0)

    assert result["removed"] == EVERY_IDLE_KIND
    assert result["scanned"] == len(cache)
    assert await redis.exists(*cache[1:]) == 0
    assert await redis.exists(live_key(device)) == 1
    assert await redis.exists(*NOT_CACHE) == len(NOT_CACHE)
    assert reported[-1] == (len(cache), len(cache) + len(NOT_CACHE))  # total: DBSIZE, an upper bound


async def test_dry_run_removes_nothing_and_counts_the_same(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "cache-1")
    cache = await add_cache_keys(redis, device)

    dry = await clean_cache(redis, sessions, CleanupRun(dry_run=True), max_age_hours=0)
    assert await redis.exists(*cache) == len(cache)
    real = await clean_cache(redis, sessions, CleanupRun(), max_age_hours=0)

    assert dry["would_remove"] == real["removed"] == EVERY_IDLE_KIND
    assert await redis.exists(*cache) == 1  # the live state


async def test_removes_the_keys_of_missing_devices_whatever_their_age(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "cache-1")
    gone = device + 1000
    kept = await add_cache_keys(redis, device)
    await redis.set(live_key(gone), "{}")
    await redis.set(statistics_key(gone, START, END), "{}")

    result = await clean_cache(redis, sessions, CleanupRun(), max_age_hours=1000)

    assert result["removed"] == {"cache:live": 1, "cache:device-stats": 1}
    assert await redis.exists(live_key(gone), statistics_key(gone, START, END)) == 0
    assert await redis.exists(*kept) == len(kept)


async def test_removes_keys_idle_at_least_max_age(redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]) -> None:
    # Not small integers: Redis shares one object among their keys, and with it one idle time.
    await redis.set(cache_key("idle"), "{}")
    await asyncio.sleep(2.1)  # OBJECT IDLETIME counts whole seconds
    await redis.set(cache_key("used"), "{}")

    result = await clean_cache(redis, sessions, CleanupRun(), max_age_hours=2 / 3600)

    assert result["removed"] == {"cache:other": 1}
    assert await redis.exists(cache_key("idle")) == 0
    assert await redis.exists(cache_key("used")) == 1


async def test_under_an_lfu_policy_the_keys_of_deleted_devices_still_go(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Redis keeps no idle time under an LFU maxmemory-policy (OBJECT IDLETIME is an error): the job says
    so and removes what needs none, instead of failing."""
    device = await add_device(sessions, "cache-1")
    kept = await add_cache_keys(redis, device)
    await redis.set(statistics_key(device + 1000, START, END), "{}")
    policy = (await redis.config_get("maxmemory-policy"))["maxmemory-policy"]
    await redis.config_set("maxmemory-policy", "allkeys-lfu")
    try:
        result = await clean_cache(redis, sessions, CleanupRun(), max_age_hours=1 / 3600)
        everything = await clean_cache(redis, sessions, CleanupRun(dry_run=True), max_age_hours=0)
    finally:
        await redis.config_set("maxmemory-policy", policy)

    assert result["removed"] == {"cache:device-stats": 1}
    assert "LFU" in result["idle_time"]
    assert await redis.exists(*kept) == len(kept)
    assert everything["would_remove"] == EVERY_IDLE_KIND  # 0 hours takes every key, idle time or not
    assert "idle_time" not in everything


async def test_pattern_is_matched_inside_the_namespace(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "cache-1")
    cache = await add_cache_keys(redis, device)

    result = await clean_cache(redis, sessions, CleanupRun(), pattern="device-stats:*", max_age_hours=0)

    assert result["removed"] == {"cache:device-stats": 1}
    assert await redis.exists(*cache) == len(cache) - 1


@pytest.mark.parametrize("pattern", ["tracker:queue:*", "a\\b", "", "x" * 129, "live:{1}", "live *"])
def test_check_cache_pattern_refuses(pattern: str) -> None:
    with pytest.raises(FieldError) as refused:
        check_cache_pattern(pattern)
    assert refused.value.field == "pattern"


@pytest.mark.parametrize("pattern", ["live:*", "*", "device-stats:1[0-9]:?*", "x" * 128])
def test_check_cache_pattern_accepts(pattern: str) -> None:
    assert check_cache_pattern(pattern) == pattern
