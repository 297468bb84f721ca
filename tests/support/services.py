"""The Redis and PostgreSQL the tests use, the bootstrap admin's token, settings on them, and the device
listener wired in-process.

- Redis: TRACKER_TEST_REDIS_URL (default redis://127.0.0.1:6379/15).
- PostgreSQL: TRACKER_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker_jobs.commands.queue import Inbox
from tracker_jobs.core.config import Settings, load_settings
from tracker_jobs.core.db import session_factory
from tracker_jobs.devices.service import DeviceDirectory
from tracker_jobs.listener.osmand import Ingest
from tracker_jobs.listener.serve import running_listener
from tracker_jobs.positions.acceptor import Acceptor

REDIS_URL = os.environ.get("TRACKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("TRACKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_TOKEN = "test-admin-token"


def make_settings(database_url: str, redis_url: str, **overrides: str) -> Settings:
    env = {
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_REDIS_URL": redis_url,
        "TRACKER_ADMIN_TOKEN": ADMIN_TOKEN,
        "TRACKER_POSITION_PARTITIONS": "4",
        **overrides,
    }
    return load_settings(env)


@asynccontextmanager
async def open_listener(
    settings: Settings, redis: ArqRedis, engine: AsyncEngine
) -> AsyncIterator[aiohttp.ClientSession]:
    """The device listener on a free port, wired as `tracker-jobs listener` wires it (its own acceptor and
    directory, watching access changes), and an HTTP client for it (paths relative to it)."""
    ingest = Ingest(
        Acceptor(redis, settings.position_partitions), DeviceDirectory(session_factory(engine)), Inbox(redis)
    )
    async with (
        running_listener(settings, ingest, "127.0.0.1", 0) as listener,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{listener.port}") as client,
    ):
        yield client
