"""Give the database back the room that deletes left and refresh the planner's statistics.

After retention and cleanup delete millions of rows, PostgreSQL's autovacuum gets to the big tables
when it does; a VACUUM (ANALYZE) right after makes the dead rows' space reusable at once and gives the
planner current statistics. (Autovacuum never analyzes a partitioned table's parent, which the
planner reads for queries over several partitions: a VACUUM of `positions` or `events` does, and its
partitions too.) Each table is its own statement outside any transaction, as VACUUM requires, with a
short lock timeout: VACUUM only waits behind DDL (a partition being made or dropped) or another vacuum,
never behind ordinary writes, and a table it cannot lock in time is skipped and named, not waited on.

SQLite: `PRAGMA optimize` refreshes the statistics the planner would use, and `PRAGMA incremental_vacuum`
returns the free pages to the file system, which only a database made with auto_vacuum=INCREMENTAL
can do (the mode must be set before the first table is created).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tracker_jobs.cleanup.chunks import CleanupRun
from tracker_jobs.core.db import lock_timed_out

# The tables that grow and that cleanup deletes from (the status shows their sizes); the others are a few
# rows per user or device.
BIG_TABLES = ("positions", "events", "deliveries", "job_records", "sessions")
AUTO_VACUUM_MODES = {0: "none", 1: "full", 2: "incremental"}


async def optimize_database(engine: AsyncEngine, run: CleanupRun, *, lock_timeout_s: float = 2.0) -> dict[str, Any]:
    """VACUUM (ANALYZE) the big tables on PostgreSQL, optimize and incrementally vacuum SQLite; a dry
    run says what it would do and does nothing."""
    async with engine.connect() as connection:
        # VACUUM cannot run in a transaction; SQLite's pragmas need none either.
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        if connection.dialect.name == "postgresql":
            return await _vacuum_postgres(connection, run, lock_timeout_s)
        return await _optimize_sqlite(connection, run)


async def _vacuum_postgres(connection: AsyncConnection, run: CleanupRun, lock_timeout_s: float) -> dict[str, Any]:
    if run.dry_run:
        return run.result(would_vacuum=list(BIG_TABLES))
    # lock_timeout, not SKIP_LOCKED: SKIP_LOCKED skips a table (or one partition of positions or events) with a
    # warning only, where a timeout is an error that names the table this reports as skipped.
    await connection.exec_driver_sql(f"SET lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
    vacuumed: list[str] = []
    skipped: list[str] = []
    for done, table in enumerate(BIG_TABLES, start=1):
        async with run.step(table):
            (vacuumed if await _vacuum(connection, table) else skipped).append(table)
        await run.progress(done, len(BIG_TABLES), f"vacuumed {table}")
    return run.result(vacuumed=vacuumed, skipped=skipped)


async def _vacuum(connection: AsyncConnection, table: str) -> bool:
    """VACUUM (ANALYZE) one table; False when its lock was not had within the lock timeout."""
    try:
        await connection.exec_driver_sql(f"VACUUM (ANALYZE) {connection.dialect.identifier_preparer.quote(table)}")
    except DBAPIError as error:
        if not lock_timed_out(error):
            raise
        return False
    return True


async def _optimize_sqlite(connection: AsyncConnection, run: CleanupRun) -> dict[str, Any]:
    mode = AUTO_VACUUM_MODES.get(await _pragma(connection, "auto_vacuum"), "unknown")
    page_size = await _pragma(connection, "page_size")
    free_before = await _pragma(connection, "freelist_count")
    details: dict[str, Any] = {"auto_vacuum": mode, "page_size": page_size, "freelist_pages_before": free_before}
    if mode != "incremental":
        details["note"] = f"auto_vacuum is {mode}: incremental_vacuum returns no pages to the file system"
    if run.dry_run:
        return run.result(would_run=["optimize", "incremental_vacuum"], **details)
    async with run.step("optimize"):
        await connection.exec_driver_sql("PRAGMA optimize")
    await run.progress(1, 2, "optimized")
    async with run.step("incremental_vacuum"):
        # The pragma frees one page per step of its statement, and Python's sqlite3 steps a statement
        # that returns no rows only once; executescript steps it to the end, freeing every page.
        driver = (await connection.get_raw_connection()).driver_connection  # aiosqlite's connection
        assert driver is not None  # None only once the connection is closed
        await driver.executescript("PRAGMA incremental_vacuum")
    await run.progress(2, 2, "vacuumed")
    return run.result(freelist_pages_after=await _pragma(connection, "freelist_count"), **details)


async def _pragma(connection: AsyncConnection, name: str) -> int:
    return int((await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one())
