"""The partitioned Redis streams accepted positions wait in, and the per-partition drain lock.

Why it is race-free: an accepted position is XADDed, then `append` sets the partition's
"scheduled" flag with NX and the caller enqueues a drain job only when it set it. A drain job takes
the partition's lock, then clears the flag *before* it reads, so every entry added before a failed
NX is read by a job that comes after the flag was set. The lock makes one partition's drains run one
at a time, which keeps each device's positions in order. A job that finds the lock taken ends at
once and leaves the flag set (so accepts stop enqueueing); the holder, after letting go, clears the
flag, re-checks the stream and schedules a fresh drain if anything waits.
A drainer that died leaves its entries pending and its lock expiring; the next lock holder claims
them all (the next position or the cron sweep schedules it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tracker_jobs.monitor.counters import COUNTERS_KEY, POSITIONS_ACCEPTED, POSITIONS_REJECTED

log = logging.getLogger(__name__)

GROUP = "store"
LOCK_TTL_MS = 6_000
# A flag whose job died with its worker (or was never enqueued) must not block a partition for long:
# once it expires, the next position or the sweep schedules a fresh drain. An extra drain is harmless.
SCHEDULED_TTL_S = 10
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
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


# Table DDL (a partition made or detached, cleanup/partitions.py) needs the positions or events table to
# itself for a moment. Every drain's transaction holds both (it stores the events it finds with the
# positions), and drains overlap; while a pause is held, no drain opens a new one, so the DDL waits only
# for those in flight, and none queue behind it. Each holder has its own entry, with a deadline (Redis's
# clock): two holders at once (a retention run and the partition maker) each keep the drains paused until
# they are done, and a holder that dies holds them up until its deadline at most.
DRAINS_PAUSED_KEY = "tracker:positions:drains-paused"
PAUSE_POLL_S = 0.005
MAX_PAUSE_S = 5.0
_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
# The key itself outlives its longest deadline, no more.
_PAUSE = _NOW_MS + (
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])"
    " if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 1"
)
# How many pauses are held: those whose deadline has passed are dropped first.
_HELD = _NOW_MS + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) return redis.call('ZCARD', KEYS[1])"


@asynccontextmanager
async def drains_paused(redis: Redis, max_s: float = MAX_PAUSE_S) -> AsyncIterator[None]:
    token = uuid.uuid4().hex
    await redis.eval(_PAUSE, 1, DRAINS_PAUSED_KEY, token, str(int(max_s * 1000)))  # type: ignore[misc]
    try:
        yield
    finally:
        await redis.zrem(DRAINS_PAUSED_KEY, token)


async def wait_while_paused(redis: Redis) -> None:
    """Before a drain's transaction: wait while table DDL has the drains paused (at most MAX_PAUSE_S)."""
    deadline = time.monotonic() + MAX_PAUSE_S
    while await redis.eval(_HELD, 1, DRAINS_PAUSED_KEY) and time.monotonic() < deadline:  # type: ignore[misc]  # noqa: ASYNC110 (held by another process: polled)
        await asyncio.sleep(PAUSE_POLL_S)


async def ensure_group(redis: Redis, partition: int) -> None:
    try:
        # From "0": entries accepted before the first worker ever started are read too.
        await redis.xgroup_create(stream_key(partition), GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


@dataclass
class Scheduled:
    new: dict[int, str]  # partition -> id of the drain job the caller must enqueue
    job_ids: dict[int, str]  # partition -> its drain job, new or already waiting
    waits_ms: list[int]  # per limited position: 0 accepted, else refused by its rate limit for this many ms


# One script call per group of requests (atomic, so a drain cannot clear a flag mid-way). Positions
# travel as one stream entry per partition per group: a JSON array of their encodings, so a batch of
# thousands costs a handful of XADDs. Positions under a device rate limit are counted first (INCR per
# device) and only the allowed ones join their partition's entry. Then each touched partition's
# "scheduled" flag is claimed (SET NX) and the drain job holding it read back.
# The engine's accepted and rejected counters move in the same call.
# KEYS: stream and flag key per partition (P partitions), then one rate key per limited position, then
# the counters hash. ARGV: window ms, flag ttl s, P, P proposed job ids, P bulk payloads (unlimited
# positions, joined with commas; may be empty), P bulk counts, then per limited position: its
# partition (1-based), limit and payload; last, the accepted and the rejected counters' names.
# Each entry has fields p (the array) and n (how many positions it holds).
_APPEND = """
local window, ttl, parts = ARGV[1], ARGV[2], tonumber(ARGV[3])
local chunks, counts, waits = {}, {}, {}
for part = 1, parts do
  local bulk = ARGV[3 + parts + part]
  chunks[part] = {}
  counts[part] = tonumber(ARGV[3 + 2 * parts + part])
  if bulk ~= '' then chunks[part][1] = bulk end
end
local limited = #KEYS - 2 * parts - 1
local refused = 0
for i = 1, limited do
  local base = 3 + 3 * parts + 3 * (i - 1)
  local part, limit, rate = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), KEYS[2 * parts + i]
  local count = redis.call('INCR', rate)
  if redis.call('PTTL', rate) < 0 then redis.call('PEXPIRE', rate, window) end
  if count > limit then
    waits[i] = math.max(redis.call('PTTL', rate), 1)
    refused = refused + 1
  else
    waits[i] = 0
    table.insert(chunks[part], ARGV[base + 3])
    counts[part] = counts[part] + 1
  end
end
local flags, accepted = {}, 0
for part = 1, parts do
  accepted = accepted + counts[part]
  if #chunks[part] > 0 then
    redis.call('XADD', KEYS[2 * part - 1], '*', 'p', '[' .. table.concat(chunks[part], ',') .. ']', 'n', counts[part])
    local claimed = redis.call('SET', KEYS[2 * part], ARGV[3 + part], 'NX', 'EX', ttl)
    flags[#flags + 1] = {part, claimed and 1 or 0, redis.call('GET', KEYS[2 * part])}
  end
end
if accepted > 0 then redis.call('HINCRBY', KEYS[#KEYS], ARGV[#ARGV - 1], accepted) end
if refused > 0 then redis.call('HINCRBY', KEYS[#KEYS], ARGV[#ARGV], refused) end
return {waits, flags}
"""


@dataclass(frozen=True)
class Limited:
    """A position under its device's rate limit."""

    partition: int
    payload: bytes
    rate_key: str
    limit: int


async def append(redis: Redis, bulk: dict[int, list[bytes]], limited: list[Limited], window_s: int = 60) -> Scheduled:
    """Append positions to their partitions' streams in one round trip: `bulk` ones all, `limited`
    ones within their rate limits; claim each touched partition's flag, which holds the id of the
    partition's pending drain job. `waits_ms` answers for the limited positions, in order."""
    partitions = sorted(set(bulk) | {item.partition for item in limited})
    slot = {partition: index + 1 for index, partition in enumerate(partitions)}
    keys = [key for partition in partitions for key in (stream_key(partition), scheduled_key(partition))]
    keys += [item.rate_key for item in limited]
    keys.append(COUNTERS_KEY)
    args: list[Any] = [window_s * 1000, SCHEDULED_TTL_S, len(partitions)]
    args += [f"drain:{partition}:{uuid.uuid4().hex}" for partition in partitions]
    args += [b",".join(bulk.get(partition, [])) for partition in partitions]
    args += [len(bulk.get(partition, [])) for partition in partitions]
    for item in limited:
        args += [slot[item.partition], item.limit, item.payload]
    args += [POSITIONS_ACCEPTED, POSITIONS_REJECTED]
    waits, flags = await redis.register_script(_APPEND)(keys=keys, args=args)
    new: dict[int, str] = {}
    job_ids: dict[int, str] = {}
    for position, claimed, holder in flags:
        partition = partitions[int(position) - 1]
        job_ids[partition] = holder.decode()
        if int(claimed):
            new[partition] = job_ids[partition]
    return Scheduled(new=new, job_ids=job_ids, waits_ms=[int(wait) for wait in waits])


async def unscheduled(redis: Redis, partitions: list[int]) -> dict[int, str]:
    """Of these partitions, those holding entries and no drain job yet, with the id their drain job
    must take (their flag is now set)."""
    async with redis.pipeline(transaction=False) as pipe:
        for partition in partitions:
            pipe.xlen(stream_key(partition))
        lengths = await pipe.execute()
    waiting = [partition for partition, length in zip(partitions, lengths, strict=True) if length]
    async with redis.pipeline(transaction=False) as pipe:
        for partition in waiting:
            pipe.set(scheduled_key(partition), f"drain:{partition}:{uuid.uuid4().hex}", nx=True, ex=SCHEDULED_TTL_S)
            pipe.get(scheduled_key(partition))
        flags = await pipe.execute() if waiting else []
    return {
        partition: holder.decode()
        for partition, claimed, holder in zip(waiting, flags[0::2], flags[1::2], strict=True)
        if claimed
    }


class PartitionLock:
    """Exclusive right to drain one partition. The lock lives LOCK_TTL_MS unless renewed: a keeper
    task renews it while the holder works, so a killed holder frees the partition within seconds."""

    def __init__(self, redis: Redis, partition: int) -> None:
        self.redis = redis
        self.key = lock_key(partition)
        self.token = uuid.uuid4().hex
        self.keeper: asyncio.Task[None] | None = None
        self.lost = False  # the lock expired under us (Redis away too long): stop before the next batch

    async def acquire(self) -> bool:
        """Take the lock if it is free; never wait (a holder re-checks the stream when it lets go)."""
        if not await self.redis.set(self.key, self.token, nx=True, px=LOCK_TTL_MS):
            return False
        self.keeper = asyncio.create_task(self._keep())
        return True

    async def _keep(self) -> None:
        while not self.lost:
            await asyncio.sleep(LOCK_TTL_MS / 3000)
            try:
                self.lost = not await self.redis.eval(_RENEW, 1, self.key, self.token, str(LOCK_TTL_MS))  # type: ignore[misc]
            except Exception as error:  # Redis gone: the holder's own calls fail and end the drain
                log.warning("cannot renew %s: %s", self.key, error)

    async def release(self) -> None:
        if self.keeper is not None:
            self.keeper.cancel()
        await self.redis.eval(_RELEASE, 1, self.key, self.token)  # type: ignore[misc]


async def claim_entries(
    redis: Redis, partition: int, consumer: str, count: int, cursor: bytes | str = "0-0"
) -> tuple[list[tuple[bytes, dict[bytes, bytes]]], bytes]:
    """Up to `count` unacknowledged entries from `cursor` on (a drainer died or failed holding them;
    the lock says nobody else works on them), and the cursor to go on from (b"0-0": no more)."""
    key = stream_key(partition)
    claimed: Any = await _with_group(
        redis, partition, lambda: redis.xautoclaim(key, GROUP, consumer, min_idle_time=0, start_id=cursor, count=count)
    )
    next_cursor = claimed[0] if isinstance(claimed[0], bytes) else str(claimed[0]).encode()
    return [entry for entry in claimed[1] if entry[1] is not None], next_cursor


async def read_new_entries(
    redis: Redis, partition: int, consumer: str, count: int
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Up to `count` entries no drain has read yet."""
    key = stream_key(partition)
    fresh: Any = await _with_group(redis, partition, lambda: redis.xreadgroup(GROUP, consumer, {key: ">"}, count=count))
    return list(fresh[0][1]) if fresh else []


async def _with_group(redis: Redis, partition: int, command: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await command()
    except ResponseError as error:
        if "NOGROUP" not in str(error):
            raise
        # The stream went away under us (Redis restarted without its data, or flushed): start afresh.
        await ensure_group(redis, partition)
        return await command()


SET_ASIDE_KEY = "tracker:positions:set-aside"


async def set_aside(redis: Redis, partition: int, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
    """Move entries the database refuses for good to one stream an operator can inspect and replay."""
    async with redis.pipeline(transaction=True) as pipe:
        for entry_id, fields in entries:
            pipe.xadd(SET_ASIDE_KEY, {"p": fields[b"p"], "n": fields[b"n"], "partition": partition, "from": entry_id})
        pipe.xack(stream_key(partition), GROUP, *[entry_id for entry_id, _ in entries])
        pipe.xdel(stream_key(partition), *[entry_id for entry_id, _ in entries])
        await pipe.execute()


async def acknowledge(redis: Redis, partition: int, entry_ids: list[bytes]) -> None:
    key = stream_key(partition)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(key, GROUP, *entry_ids)
        pipe.xdel(key, *entry_ids)
        await pipe.execute()
