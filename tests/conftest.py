"""Fixtures: the real Redis and PostgreSQL of this machine, and SQLite, each test isolated.

- Redis: TRACKER_TEST_REDIS_URL (default redis://127.0.0.1:6379/15), flushed around every test.
- PostgreSQL: TRACKER_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test); the
  schema is migrated once per run, every table truncated after each test.
- SQLite: a migrated template file copied for each test.
Tests that take `database_url` (or anything built on it) run once per backend.

Also the fixtures tests in several folders share: the admin app in-process, the device listener, and two
`user` accounts (`users`). What is not a fixture lives in tests/support/.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.support.factories import OTHER_TOKEN, USER_TOKEN, Users, make_user
from tests.support.services import ADMIN_TOKEN, POSTGRES_URL, REDIS_URL, make_settings, open_listener
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import create_engine, session_factory, transaction
from tracker_jobs.core.redis import connect_redis
from tracker_jobs.migrations import upgrade_database
from tracker_jobs.models import metadata
from tracker_jobs.users.service import ensure_bootstrap_admin
from tracker_jobs.web.app import create_admin_app


def _reset_postgres_schema(url: str) -> None:
    async def reset() -> None:
        engine = create_engine(url)
        async with engine.begin() as connection:
            await connection.execute(sa.text("DROP SCHEMA public CASCADE"))
            await connection.execute(sa.text("CREATE SCHEMA public"))
        await engine.dispose()

    asyncio.run(reset())


@pytest.fixture(scope="session")
def postgres_url() -> str:
    _reset_postgres_schema(POSTGRES_URL)
    upgrade_database(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


def _truncate_postgres(url: str) -> None:
    async def truncate() -> None:
        engine = create_engine(url)
        tables = ", ".join(table.name for table in metadata.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await engine.dispose()

    asyncio.run(truncate())


@pytest.fixture
def clean_postgres_url(postgres_url: str) -> Iterator[str]:
    """The migrated PostgreSQL test database, emptied after the test."""
    yield postgres_url
    _truncate_postgres(postgres_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database on each backend in turn."""
    if request.param == "sqlite":
        path = tmp_path / "tracker.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("clean_postgres_url")
    return url


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await connect_redis(redis_url)
    await pool.flushdb()
    yield pool
    await pool.flushdb()
    await pool.aclose()


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url)
    async with transaction(session_factory(engine)) as session:
        await ensure_bootstrap_admin(session, ADMIN_TOKEN)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
async def admin_client(settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_admin_app(settings, redis, engine))) as client:
        yield client


@pytest.fixture
async def ingest_client(
    settings: Settings, redis: ArqRedis, engine: AsyncEngine
) -> AsyncIterator[aiohttp.ClientSession]:
    async with open_listener(settings, redis, engine) as client:
        yield client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def users(sessions: async_sessionmaker[AsyncSession]) -> Users:
    """Two `user` accounts beside the bootstrap admin."""
    return Users(
        user=await make_user(sessions, "user@example.com", token=USER_TOKEN, password="user password"),
        other=await make_user(sessions, "other@example.com", token=OTHER_TOKEN),
    )
