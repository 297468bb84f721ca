"""Rate limits kept in Redis, so they hold across processes: a fixed window per key, one script call each.

The admin API is limited per token, and per client address for requests that carry no valid token
(see `auth`).
Device ingest is limited per device inside the position acceptor's own Redis round trip and answered
with the same TooManyRequests. A limit of 0 turns it off. Redis out of reach lets requests through: a limit
must not become an outage.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

_COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""
_COUNT_SHA = hashlib.sha1(_COUNT_SCRIPT.encode()).hexdigest()  # noqa: S324 -- Redis names scripts by SHA-1
_REDIS_AWAY = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


async def seconds_to_wait(redis: Redis, key: str, limit: int, window_s: int) -> float | None:
    """Count one request against `key`; None while within `limit` per window, else the seconds left."""
    if limit <= 0:
        return None
    window_ms = str(window_s * 1000)
    try:
        try:
            count, ttl_ms = await redis.evalsha(_COUNT_SHA, 1, key, window_ms)  # type: ignore[misc]
        except NoScriptError:
            count, ttl_ms = await redis.eval(_COUNT_SCRIPT, 1, key, window_ms)  # type: ignore[misc]
    except _REDIS_AWAY:
        return None
    return int(ttl_ms) / 1000 if int(count) > limit else None


async def over_limit(redis: Redis, key: str, limit: int, *, unless_exists: str) -> float | None:
    """Whether `key` has already spent its `limit` this window, counting nothing: the seconds left, or
    None. A request whose `unless_exists` key is there (a token already used this window) is spared."""
    if limit <= 0:
        return None
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            pipe.exists(unless_exists)
            count, ttl_ms, spared = await pipe.execute()
    except _REDIS_AWAY:
        return None
    if spared or count is None or int(count) <= limit:
        return None
    return max(int(ttl_ms), 1) / 1000
