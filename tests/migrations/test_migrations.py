"""The alembic history builds exactly the schema the models describe, on both backends; it ships inside
the package; and the raw SQL of the position store names the models' columns."""

from __future__ import annotations

import re
import sqlite3
import tomllib
from contextlib import closing
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateTable

import tracker_jobs
from tracker_jobs.migrations import alembic_dir, include_name
from tracker_jobs.models import metadata
from tracker_jobs.positions import store
from tracker_jobs.positions.record import COLUMNS, PositionRecord, copy_rows


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "include_name": include_name})
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


async def test_postgresql_storage_parameters_are_the_models(postgres_url: str) -> None:
    # compare_metadata does not look at storage parameters either: each table's `postgresql_with` (devices'
    # fillfactor) is what the migrated tables have, and no table has one the models do not ask for.
    wanted = {
        table.name: {f"{name}={value}" for name, value in table.dialect_options["postgresql"]["with"].items()}
        for table in metadata.tables.values()
        if table.dialect_options["postgresql"]["with"]
    }
    assert "fillfactor=50" in wanted["devices"]
    connection = await asyncpg.connect(postgres_url)
    try:
        rows = await connection.fetch(
            "SELECT c.relname, c.reloptions FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.reloptions IS NOT NULL"
        )
    finally:
        await connection.close()
    assert {name: set(options) for name, options in rows} == wanted


# --- The migrations ship with the package -------------------------------------------------------------

# The repository: the folder above this file that holds pyproject.toml (wherever the tests folder nests it).
ROOT = next(folder for folder in Path(__file__).resolve().parents if (folder / "pyproject.toml").is_file())


def test_the_package_list_names_every_package_and_maps_the_migrations_in() -> None:
    # pyproject.toml lists the packages by hand (discovery cannot place alembic/ under tracker_jobs), so
    # a package folder added, moved or removed must be added, moved or removed there too.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"tracker_jobs"} | {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in (ROOT / "tracker_jobs").rglob("*")
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py"))
    }
    listed = set(setuptools["packages"]) - {"tracker_jobs.alembic"}
    assert (sorted(folders - listed), sorted(listed - folders)) == ([], []), "(to add, to remove) in pyproject.toml"
    assert setuptools["package-dir"] == {"tracker_jobs.alembic": "alembic"}
    # A regular package named alembic at the root would shadow the alembic library for the tests.
    assert not (ROOT / "alembic" / "__init__.py").exists()
    # Each file of the history ships: .py files beside env.py as the package's modules, the rest by glob.
    globs = setuptools["package-data"]["tracker_jobs.alembic"]
    for path in (ROOT / "alembic").rglob("*"):
        relative = path.relative_to(ROOT / "alembic")
        if path.is_file() and "__pycache__" not in relative.parts:
            as_module = relative.parent == Path() and relative.suffix == ".py"
            assert as_module or any(fnmatch(relative.as_posix(), glob) for glob in globs), relative


def test_the_migrations_are_found_beside_the_installed_package_never_in_site_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    (site / "tracker_jobs").mkdir(parents=True)
    monkeypatch.setattr(tracker_jobs, "__file__", str(site / "tracker_jobs" / "__init__.py"))
    # Only the alembic library lies beside the package (here given an env.py, to be sure it is not taken).
    (site / "alembic").mkdir()
    (site / "alembic" / "env.py").touch()
    with pytest.raises(FileNotFoundError, match="migration scripts are missing"):
        alembic_dir()
    (site / "tracker_jobs" / "alembic").mkdir()
    (site / "tracker_jobs" / "alembic" / "env.py").touch()
    assert alembic_dir() == site / "tracker_jobs" / "alembic"


def test_the_source_tree_runs_its_own_migrations() -> None:
    assert alembic_dir().resolve() == ROOT / "alembic"


# --- The raw SQL of the position store names the models' columns ---------------------------------------

POSITIONS: sa.Table = metadata.tables["positions"]
DEVICES: sa.Table = metadata.tables["devices"]
_COMMA = re.compile(r",\s*(?![^()]*\))")  # commas outside parentheses: varchar(32), numeric(10, 2)


def _names(listing: str) -> list[str]:
    return [" ".join(name.split()) for name in _COMMA.split(listing.strip())]


def _written_columns(table: sa.Table) -> list[str]:
    """What an insert supplies: every column but an id the database generates."""
    return [column.name for column in table.columns if not (column.primary_key and column.autoincrement is not False)]


def _statements() -> dict[str, str]:
    """Every SQL text store.py holds, plain or sa.text(), by its name."""
    found = {}
    for name, value in vars(store).items():
        text = value.text if isinstance(value, sa.TextClause) else value
        if isinstance(text, str) and re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|CREATE)\b", text, re.IGNORECASE):
            found[name] = text
    return found


def _scratch_table() -> tuple[str, dict[str, str], str]:
    """The table a re-run batch is copied into first: its name, its columns with their types, its DDL."""
    (ddl,) = (text for text in _statements().values() if re.match(r"\s*CREATE\s+TEMP", text, re.IGNORECASE))
    match = re.search(r"TABLE\s+(?:IF NOT EXISTS\s+)?(\w+)\s*\((.*)\)\s*ON COMMIT", ddl, re.IGNORECASE | re.DOTALL)
    assert match is not None, ddl
    columns = dict(definition.split(maxsplit=1) for definition in _names(match[2]))
    return match[1], columns, ddl


def test_the_copy_column_list_is_every_column_of_the_positions_model() -> None:
    assert len(set(COLUMNS)) == len(COLUMNS)
    assert sorted(COLUMNS) == sorted(_written_columns(POSITIONS))


def test_copy_records_hold_each_value_under_its_column() -> None:
    # copy_rows writes its tuples by hand (the hot path): position i must be the value of COLUMNS[i].
    row: dict[str, Any] = {name: f"value of {name}" for name in COLUMNS}
    row |= {"fix_time": 1_767_225_600.0, "server_time": 1_767_225_700.0, "attributes": {"column": "attributes"}}
    (record,) = copy_rows([PositionRecord(**row)], json_text=False)
    expected = row | {
        "fix_time": datetime.fromtimestamp(row["fix_time"], UTC),
        "server_time": datetime.fromtimestamp(row["server_time"], UTC),
    }
    assert dict(zip(COLUMNS, record, strict=True)) == expected


def test_the_scratch_table_has_the_copied_columns() -> None:
    _, columns, _ = _scratch_table()
    assert sorted(columns) == sorted(COLUMNS)


def test_the_move_from_the_scratch_table_inserts_every_column_in_order() -> None:
    scratch, _, _ = _scratch_table()
    (move,) = (text for text in _statements().values() if re.search(rf"\bFROM\s+{scratch}\b", text))
    match = re.search(
        r"INSERT INTO positions\s*\((.*?)\)\s*SELECT\s+(.*?)\s+FROM\s+\w+\s+ON CONFLICT\s*\((.*?)\)", move, re.DOTALL
    )
    assert match is not None, move
    inserted, selected, conflict = (_names(group) for group in match.groups())
    # INSERT ... SELECT pairs the lists by position: the same names in the same order.
    assert inserted == selected
    assert sorted(inserted) == sorted(_written_columns(POSITIONS))
    unique = [
        [column.name for column in constraint.columns]
        for constraint in POSITIONS.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    assert conflict in unique


def test_every_column_the_raw_sql_names_is_in_the_models() -> None:
    tables = {"positions": POSITIONS, "devices": DEVICES}
    checked: set[str] = set()  # so that SQL moved out of store.py does not leave this test passing on nothing
    for name, text in _statements().items():
        # Qualifiers: the tables themselves and their aliases ("positions AS current"); other aliases
        # name unnest() arrays or the scratch table, checked above.
        qualifiers = dict(tables)
        for table, alias in re.findall(r"\b(\w+)\s+AS\s+(\w+)", text, re.IGNORECASE):
            if table in tables:
                qualifiers[alias] = tables[table]
        for qualifier, column in re.findall(r"\b(\w+)\.(\w+)\b", text):
            if qualifier in qualifiers:
                assert column in qualifiers[qualifier].columns, f"{name}: {qualifier}.{column}"
                checked.add(f"{qualifiers[qualifier].name}.{column}")
        for table, assignments in re.findall(r"UPDATE\s+(\w+)\s+SET\s+(.*?)\s+(?:FROM|WHERE)\b", text, re.DOTALL):
            for assignment in _names(assignments):
                column = assignment.split("=")[0].strip()
                assert column in tables[table].columns, f"{name}: {table}.{column}"
                checked.add(f"{table}.{column}")
    # What the store reads and moves forward: each device's state and its newest position.
    assert {"devices.total_distance", "devices.position_id", "devices.last_update", "positions.fix_time"} <= checked


async def test_the_scratch_table_has_the_types_of_the_positions_table(postgres_url: str) -> None:
    # The migrated table is the models' (test_models_and_migrations_agree): PostgreSQL names each type.
    scratch, _, ddl = _scratch_table()
    connection = await asyncpg.connect(postgres_url)
    try:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute(ddl)
            rows = await connection.fetch(
                """
                SELECT a.attrelid = 'positions'::regclass AS stored, a.attname, format_type(a.atttypid, a.atttypmod)
                FROM pg_attribute AS a
                WHERE a.attrelid IN ('positions'::regclass, $1::regclass) AND a.attnum > 0 AND NOT a.attisdropped
                """,
                scratch,
            )
        finally:
            await transaction.rollback()  # the scratch table goes with it
    finally:
        await connection.close()
    stored = {name: kind for is_stored, name, kind in rows if is_stored}
    copied = {name: kind for is_stored, name, kind in rows if not is_stored}
    assert copied == {name: stored[name] for name in COLUMNS}
