"""The alembic history builds exactly the schema the models describe, on both backends."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateTable

from tracker_jobs.models import metadata


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as connection:
        diff = await connection.run_sync(differences)
    assert diff == []


def _generated_integer_ids() -> set[str]:
    """Tables whose id is a single integer column the database fills in."""
    names = set()
    for table in metadata.tables.values():
        key = list(table.primary_key.columns)
        if len(key) == 1 and isinstance(key[0].type, sa.Integer) and key[0].autoincrement in (True, "auto"):
            names.add(table.name)
    return names


def test_sqlite_never_reuses_ids_as_the_models_say(sqlite_template: Path) -> None:
    # compare_metadata does not look at table options, so AUTOINCREMENT is compared here: the models
    # ask for it on every generated integer id, and the migrated schema has it on those tables only.
    generated = _generated_integer_ids()
    assert {"devices", "users", "positions"} <= generated
    in_models = {
        table.name
        for table in metadata.tables.values()
        if "AUTOINCREMENT" in str(CreateTable(table).compile(dialect=sqlite.dialect()))
    }
    assert in_models == generated
    with closing(sqlite3.connect(sqlite_template)) as connection:
        rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    assert {name for name, sql in rows if "AUTOINCREMENT" in sql} == generated
