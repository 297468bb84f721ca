"""Apply the alembic history (`tracker-jobs migrate`, and `up` before it starts anything).

The history is the repository's top-level alembic/ folder. It ships inside the wheel as package data,
`tracker_jobs/alembic/` (pyproject.toml maps that subpackage onto the folder), so an installed engine
migrates from any working directory and needs no alembic.ini.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.config import Config

import tracker_jobs
from alembic import command
from tracker_jobs.cleanup.partitions import is_partition_table


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """What alembic compares with the models: not the partitions of positions and events, which the engine
    makes and drops (cleanup/partitions.py)."""
    return not (type_ == "table" and name is not None and is_partition_table(name))


def alembic_dir() -> Path:
    """The migration scripts: `tracker_jobs/alembic/` where the package is installed from a wheel, the
    top-level alembic/ beside it where it is imported from the source tree."""
    package = Path(tracker_jobs.__file__).parent
    installed = package / "alembic"
    if (installed / "env.py").is_file():
        return installed
    # An editable install (PEP 660) imports the package from the source tree, and setuptools' editable
    # finder does not expose a mapped folder that has no __init__.py (and alembic/ must not get one, see
    # pyproject.toml); the tests import it from there too. pyproject.toml marks the source tree, so an
    # installed package never takes site-packages/alembic, which is the alembic library itself.
    source = package.parent / "alembic"
    if (source / "env.py").is_file() and (package.parent / "pyproject.toml").is_file():
        return source
    raise FileNotFoundError(f"the migration scripts are missing: no env.py in {installed} or {source}")


def alembic_config(database_url: str) -> Config:
    config = Config()
    # Option values go through ConfigParser interpolation: a literal % (a URL-encoded password, a
    # folder name) must be doubled.
    config.set_main_option("script_location", str(alembic_dir()).replace("%", "%%"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
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
