"""Alembic environment: one migration history for PostgreSQL and SQLite, run on the async drivers."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from sqlalchemy.engine import Connection
from sqlmodel.sql.sqltypes import AutoString

from alembic import context
from tracker_jobs.core.config import get_settings
from tracker_jobs.core.db import UTCDateTime, create_engine
from tracker_jobs.migrations import include_name
from tracker_jobs.models import metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations must not import the project's types: render ours as the plain types they store.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
        render_item=render_item,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().database_url
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:  # a failed migration must not leave a connection (and a SQLite lock) open
        await engine.dispose()


# By hand (`alembic upgrade head`) the CLI reads alembic.ini, whose logging sections say what it prints;
# the engine passes no file and keeps the logging it has set up.
if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

connectable = context.config.attributes.get("connection")
if connectable is not None:
    _configure(connectable)
else:
    asyncio.run(_run_online())
