"""Connections to Redis: the arq pool every process uses, with a clear error when Redis is not there,
listening to a pub/sub channel for as long as a process runs, and the namespace of the cache keys."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import Redis

from tracker_jobs.core.serialization import deserialize_job, serialize_job

log = logging.getLogger(__name__)
RESUBSCRIBE_S = 1.0
# Cache keys only, so that cleanup_cache reaches nothing else: never queues, streams, job data or locks.
CACHE_PREFIX = "tracker:cache:"


def cache_key(*parts: object) -> str:
    """A key in the cache namespace: `cache_key("live", 7)` is `tracker:cache:live:7`."""
    return CACHE_PREFIX + ":".join(str(part) for part in parts)


class RedisUnavailable(RuntimeError):
    """Redis could not be reached at start-up."""


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 2
    settings.conn_retry_delay = 1
    return settings


async def connect_redis(url: str) -> ArqRedis:
    """An arq pool (a redis.asyncio client that can also enqueue jobs) speaking orjson."""
    try:
        pool = await create_pool(redis_settings(url), job_serializer=serialize_job, job_deserializer=deserialize_job)
        await pool.ping()
    except (OSError, ConnectionError, TimeoutError) as error:
        raise RedisUnavailable(f"cannot reach Redis at {url}: {error}") from None
    except Exception as error:  # redis-py wraps socket errors in its own types
        raise RedisUnavailable(f"cannot reach Redis at {url}: {error}") from None
    return pool


async def listen_forever(
    redis: Redis, channel: str, on_message: Callable[[bytes], None], on_subscribed: Callable[[], None] = lambda: None
) -> None:
    """Hand every message of `channel` to `on_message` until cancelled; when Redis goes away, subscribe
    again. `on_subscribed` runs after each subscription: pub/sub keeps nothing for a subscriber that was
    away, so a listener that must not miss anything catches up there."""
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                on_subscribed()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        on_message(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as error:  # Redis gone: keep going, subscribe again
            log.warning("listening on %s interrupted: %s; subscribing again", channel, error)
            await asyncio.sleep(RESUBSCRIBE_S)
