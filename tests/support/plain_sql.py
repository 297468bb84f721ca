"""Plain SQL over asyncpg, from synchronous tests (a migration's: no models, the schema is the one of the
revision under test)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


def partition_bounds(url: str, parent: str) -> dict[str, str]:
    """Each partition of `parent` by name, with its bound as PostgreSQL prints it ("DEFAULT" for the default one)."""
    rows = run(
        sql(
            url,
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits AS i"
            " JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
            parent,
        )
    )
    return {row["relname"]: row["bound"] for row in rows}


def partition_ranges(url: str, parent: str) -> dict[str, tuple[datetime, datetime]]:
    """Each range partition of `parent` by name, with its bounds as the catalogue holds them."""
    rows = run(
        sql(
            url,
            "SELECT c.relname, b.m[1]::timestamptz AS low, b.m[2]::timestamptz AS high FROM pg_inherits AS i"
            " JOIN pg_class AS c ON c.oid = i.inhrelid, LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound,"
            " c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS m) AS b"
            " WHERE i.inhparent = to_regclass($1) AND b.m IS NOT NULL",
            parent,
        )
    )
    return {row["relname"]: (row["low"], row["high"]) for row in rows}


def add_device(url: str, position_id: int | None = None) -> None:
    """Device 1, as the columns of every revision since 0007 allow."""
    run(
        sql(
            url,
            "INSERT INTO devices (id, unique_id, name, status, disabled, total_distance, motion, attributes,"
            " created_at, position_id) VALUES (1, 'imei-1', 'van', 'offline', false, 0, false, '{}', now(), $1)",
            position_id,
        )
    )
