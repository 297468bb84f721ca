"""Cleaning the engine's Redis cache: keys not touched for a while, and the cached state of devices that
no longer exist.

The pattern a caller gives is glob-matched only inside the cache namespace (core.redis.CACHE_PREFIX),
so no pattern can reach a queue, a stream, a job's data or a lock. Keys are walked with SCAN, a page at a
time, never KEYS, which would block Redis for every other client while it walks the whole keyspace. Redis
keeps no creation time for a key; its age here is its idle time (OBJECT IDLETIME: seconds since it was
last read or written), which is what says a cache entry is no longer used. Under an LFU eviction policy
Redis keeps no idle time (it counts uses instead): then only the keys of deleted devices go, and the
result says why (Redis itself evicts what is used least).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tracker_jobs.cleanup.chunks import CleanupRun, device_ids
from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.redis import CACHE_PREFIX

SCAN_PAGE = 1000
IDLE_UNKNOWN = -1  # the key is there, but Redis keeps no idle time (an LFU maxmemory-policy)
PATTERN_MAX = 128
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9:_*?\[\]-]+")
KINDS = frozenset({"live", "device-stats", "job-progress", "recent-notifications"})
# Kinds whose second segment is a device id: their keys go with the device.
DEVICE_KINDS = frozenset({"live", "device-stats"})
# A device's live state (its newest position) is read by every new socket however long the device has
# been silent: it goes with its device, never for being idle.
KEPT_WHILE_DEVICE_EXISTS = frozenset({"live"})


def check_cache_pattern(pattern: str) -> str:
    """The pattern, if it is a plain glob that clean_cache may take; a FieldError naming `pattern` if not."""
    if not pattern:
        raise FieldError("pattern", "must not be empty (use * for every cache key)")
    if len(pattern) > PATTERN_MAX:
        raise FieldError("pattern", f"at most {PATTERN_MAX} characters")
    if pattern.startswith("tracker:"):
        raise FieldError("pattern", f"is relative to the cache namespace {CACHE_PREFIX}: leave out the prefix")
    if "\\" in pattern:
        raise FieldError("pattern", "backslash escapes are not accepted")
    if not _PATTERN_CHARS.fullmatch(pattern):
        raise FieldError("pattern", "only letters, digits and : _ - * ? [ ] are accepted")
    return pattern


async def clean_cache(
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    run: CleanupRun,
    *,
    pattern: str = "*",
    max_age_hours: float = 24,
) -> dict[str, Any]:
    """Remove the cache keys matching `pattern` that have been idle for at least `max_age_hours` (0: all
    of them; a device's live state excepted), and, whatever their idle time, those of devices no longer
    in the database. Counted per
    kind (`cache:live`, ..., `cache:other`); on a dry run, counted and left in place."""
    match = CACHE_PREFIX + check_cache_pattern(pattern)
    max_idle_s = max_age_hours * 3600
    devices = {str(device_id) for device_id in await device_ids(sessions)}  # as they appear in keys
    total = await redis.dbsize()  # an upper bound of what the scan will see: SCAN gives no total
    scanned, cursor, idle_tracked = 0, 0, True
    async with run.step("scan"):
        while True:
            cursor, keys = await redis.scan(cursor, match=match, count=SCAN_PAGE)
            scanned += len(keys)
            idle_times = await idle_times_of(redis, [key.decode() for key in keys])
            idle_tracked = idle_tracked and IDLE_UNKNOWN not in idle_times.values()
            await remove(redis, run, stale_keys(idle_times, max_idle_s, devices))
            await run.progress(scanned, total, f"scanned {scanned} keys")
            if cursor == 0:
                break
    details: dict[str, Any] = {"pattern": pattern, "max_age_hours": max_age_hours, "scanned": scanned}
    if not idle_tracked and max_idle_s > 0:
        details["idle_time"] = "not kept by Redis under an LFU maxmemory-policy: only deleted devices' keys went"
    return run.result(**details)


async def idle_times_of(redis: Redis, keys: list[str]) -> dict[str, int]:
    """Each key's idle time in seconds (IDLE_UNKNOWN under an LFU policy); keys gone since they were
    scanned (expired, deleted) are left out: nothing is left to remove."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.object("idletime", key)  # leaves the key's clock alone, where a GET would reset it
        replies = await pipe.execute(raise_on_error=False)
    idle_times = {}
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, ResponseError):
            if "LFU" not in str(reply):
                raise reply
            reply = IDLE_UNKNOWN
        if reply is not None:
            idle_times[key] = int(reply)
    return idle_times


def stale_keys(idle_times: dict[str, int], max_idle_s: float, devices: set[str]) -> list[str]:
    """Those of the keys to remove: idle at least `max_idle_s` seconds, or kept for a device that is gone."""
    return [
        key
        for key, idle_s in idle_times.items()
        if of_missing_device(key, devices)
        or (idle_enough(idle_s, max_idle_s) and kind_of(key) not in KEPT_WHILE_DEVICE_EXISTS)
    ]


def idle_enough(idle_s: int, max_idle_s: float) -> bool:
    """0 takes every key, whether or not Redis keeps its idle time."""
    return max_idle_s <= 0 or (idle_s != IDLE_UNKNOWN and idle_s >= max_idle_s)


def of_missing_device(key: str, devices: set[str]) -> bool:
    kind, _, rest = key.removeprefix(CACHE_PREFIX).partition(":")
    return kind in DEVICE_KINDS and rest.partition(":")[0] not in devices


def kind_of(key: str) -> str:
    kind = key.removeprefix(CACHE_PREFIX).partition(":")[0]
    return kind if kind in KINDS else "other"


async def remove(redis: Redis, run: CleanupRun, keys: list[str]) -> None:
    """UNLINK the keys (their memory is freed off Redis's main thread) and count them per kind; on a dry
    run, only count them."""
    if keys and not run.dry_run:
        await redis.unlink(*keys)
    for kind, count in Counter(kind_of(key) for key in keys).items():
        run.count(f"cache:{kind}", count)
