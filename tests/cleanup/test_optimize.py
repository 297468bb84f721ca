"""Optimizing the database: VACUUM (ANALYZE) of the big tables on PostgreSQL, a table it cannot lock in
time skipped and named; PRAGMA optimize and incremental_vacuum on SQLite; a dry run does nothing."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker_jobs.cleanup.chunks import CleanupRun
from tracker_jobs.cleanup.optimize import BIG_TABLES, optimize_database
from tracker_jobs.core.db import create_engine


async def vacuum_times(engine: AsyncEngine) -> dict[str, tuple[object, object]]:
    """(last_vacuum, last_analyze) of each table PostgreSQL keeps statistics for (the partitions of
    positions and events each have their own)."""
    async with engine.connect() as connection:
        rows = await connection.execute(sa.text("SELECT relname, last_vacuum, last_analyze FROM pg_stat_user_tables"))
        return {name: (vacuumed, analyzed) for name, vacuumed, analyzed in rows}


async def test_each_table_or_pragma_is_a_step(engine: AsyncEngine) -> None:
    reported: list[tuple[int, int]] = []

    async def progress(done: int, total: int, message: str) -> None:
        reported.append((done, total))

    before = await vacuum_times(engine) if engine.dialect.name == "postgresql" else {}

    result = await optimize_database(engine, CleanupRun(progress=progress))

    if engine.dialect.name == "postgresql":
        assert result["vacuumed"] == list(BIG_TABLES)
        assert result["skipped"] == []
        assert list(result["steps_s"]) == list(BIG_TABLES)
        after = await vacuum_times(engine)
        redone = {name for name, done in after.items() if all(done) and done != before.get(name)}
        assert "deliveries" in redone
        assert any(name.startswith("positions_p") for name in redone)
        assert any(name.startswith("events_p") for name in redone)
    else:
        assert list(result["steps_s"]) == ["optimize", "incremental_vacuum"]
        assert result["auto_vacuum"] in {"none", "incremental"}
        assert ("note" in result) == (result["auto_vacuum"] != "incremental")
        assert result["freelist_pages_after"] <= result["freelist_pages_before"]
    assert reported[-1][0] == reported[-1][1] == len(reported)


async def test_a_dry_run_does_nothing(engine: AsyncEngine) -> None:
    before = await vacuum_times(engine) if engine.dialect.name == "postgresql" else {}

    result = await optimize_database(engine, CleanupRun(dry_run=True))

    assert result["dry_run"] is True
    assert result["steps_s"] == {}
    if engine.dialect.name == "postgresql":
        assert result["would_vacuum"] == list(BIG_TABLES)
        assert await vacuum_times(engine) == before
    else:
        assert result["would_run"] == ["optimize", "incremental_vacuum"]


async def test_a_table_locked_past_the_timeout_is_skipped(clean_postgres_url: str) -> None:
    engine = create_engine(clean_postgres_url)
    try:
        async with engine.connect() as holder:
            # What a partition's DDL or another vacuum holds: the lock VACUUM itself needs.
            await holder.execute(sa.text("LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE"))
            result = await optimize_database(engine, CleanupRun(), lock_timeout_s=0.2)
            await holder.rollback()
    finally:
        await engine.dispose()

    assert result["skipped"] == ["events"]
    assert result["vacuumed"] == [table for table in BIG_TABLES if table != "events"]


async def test_incremental_vacuum_returns_the_free_pages(tmp_path: Path) -> None:
    """On a database made with auto_vacuum=INCREMENTAL, the pages a delete freed go back to the file system."""
    path = tmp_path / "incremental.db"
    # Made before the engine opens it: the mode only takes on a database that has no table yet and
    # is not yet in WAL mode (which the engine's connections turn on).
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        connection.execute("CREATE TABLE filler (text TEXT)")
        connection.executemany("INSERT INTO filler VALUES (?)", [("x" * 1000,)] * 2000)
        connection.execute("DELETE FROM filler")
    engine = create_engine(f"sqlite:///{path}")
    try:
        result = await optimize_database(engine, CleanupRun())
    finally:
        await engine.dispose()

    assert result["auto_vacuum"] == "incremental"
    assert "note" not in result
    assert result["freelist_pages_before"] > 400
    assert result["freelist_pages_after"] == 0
