"""Apply the alembic history (`tracker-jobs migrate`, and `up` before it starts anything)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.config import Config

import tracker_jobs
from alembic import command


def alembic_dir() -> Path:
    """The alembic/ folder beside the package (editable install) or in the working directory."""
    for candidate in (
        Path(tracker_jobs.__file__).resolve().parent.parent / "alembic",
        Path.cwd() / "alembic",
    ):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("alembic/ migrations folder not found: run from the project folder")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(alembic_dir()))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade_database(database_url: str) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already."""
    command.upgrade(alembic_config(database_url), "head")


def schema_is_current(database_url: str) -> bool:
    """Whether the database is at the newest revision (the admin app and workers refuse older ones)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from tracker_jobs.core.db import create_engine

    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()

    async def current() -> str | None:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
        finally:
            await engine.dispose()

    return asyncio.run(current()) == head
