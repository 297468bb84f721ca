"""Connections to Redis: the arq pool every process uses, with a clear error when Redis is not there."""

from __future__ import annotations

from arq.connections import ArqRedis, RedisSettings, create_pool

from tracker_jobs.core.serialization import deserialize_job, serialize_job


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
