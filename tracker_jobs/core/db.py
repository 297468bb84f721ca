"""Database engines and sessions (asyncpg or aiosqlite), shared column types and bulk writes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

# Constraint names that are the same on every backend, so alembic can alter them later.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements an INTEGER primary key; PostgreSQL wants BIGINT for positions.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonDict = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when a lock_timeout runs out


def lock_timed_out(error: sa.exc.DBAPIError) -> bool:
    """Whether the statement gave up waiting for a lock (SET lock_timeout), rather than failing."""
    return getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE


def utcnow() -> datetime:
    return datetime.now(UTC)


def async_database_url(url: str) -> str:
    """postgresql://… and sqlite:///… as the async drivers want them."""
    scheme, rest = url.split("://", 1)
    base = scheme.split("+", 1)[0]
    if base in {"postgresql", "postgres"}:
        return f"postgresql+asyncpg://{rest}"
    return f"sqlite+aiosqlite://{rest}"


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    url = async_database_url(database_url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # orjson reads jsonb several times faster than the standard library (JSON columns are read in bulk:
    # a delivery job's rows, a report's positions); jsonb never holds what orjson would refuse (NaN).
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, json_deserializer=orjson.loads
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; busy_timeout makes writers queue instead of failing.
    cursor = dbapi_connection.cursor()
    # Before WAL and before the first table, or it never takes: lets cleanup's incremental_vacuum give
    # freed pages back to the file system. On an existing database it changes nothing (its mode stays).
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


AfterCommit = Callable[[], Awaitable[Any]]
_AFTER_COMMIT = "tracker_after_commit"  # session.info key: what to run once the transaction has committed


class AfterCommitFailed(RuntimeError):
    """The transaction committed, then something it left to do afterwards failed (the cause says what)."""


def after_commit(session: AsyncSession, work: AfterCommit) -> None:
    """Run `work` once the session's transaction (see `transaction`) has committed; never if it rolls back.
    What a job reads must be committed before the job is enqueued, or a fast worker reads nothing."""
    session.info.setdefault(_AFTER_COMMIT, []).append(work)


@asynccontextmanager
async def reading(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for reads that need no transaction: each statement commits on its own (autocommit), so
    the tables it read are not held between its statements (table DDL waits for every transaction in
    flight, and a process busy elsewhere can leave one open long). Each statement reads committed data,
    as it would inside a READ COMMITTED transaction."""
    async with sessions() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on error; then what the work left
    to `after_commit` runs, in order (AfterCommitFailed if any of it fails: the commit itself stands)."""
    async with sessions() as session:
        async with session.begin():
            yield session
        pending: list[AfterCommit] = session.info.pop(_AFTER_COMMIT, [])
        for work in pending:
            try:
                await work()
            except Exception as error:
                raise AfterCommitFailed(f"committed, then failed: {error}") from error


async def insert_ignoring_duplicates(session: AsyncSession, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany INSERT … ON CONFLICT DO NOTHING: a re-run batch stores nothing twice."""
    if not rows:
        return
    insert = postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert
    await session.execute(insert(table).on_conflict_do_nothing(), list(rows))


def dialect_name(session: AsyncSession) -> str:
    assert session.bind is not None
    return session.bind.dialect.name


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
    except Exception:  # any failure to reach the database means "not connected" to /health
        return False
    return True


def iso(value: datetime | None) -> str | None:
    """A UTC time as ISO-8601 with its offset, as the API and exports write times."""
    return None if value is None else value.isoformat()
