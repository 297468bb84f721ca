"""Ids are never handed out twice, on either backend, also in databases made before revision 0004.

On SQLite a rowid table without AUTOINCREMENT hands the largest id out again once its row is
deleted: a deleted device's id went to the next device created, by another user.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from alembic import command
from tests.support.processes import clean_env, tracker_jobs_command
from tests.support.services import POSTGRES_URL
from tracker_jobs.core.db import create_engine, transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.migrations import alembic_config
from tracker_jobs.users.models import User

# The tables revision 0004 rebuilds on SQLite: every one whose model asks for AUTOINCREMENT.
# The tables 0004 rebuilt with AUTOINCREMENT (later revisions create theirs with it, and 0006 replaced
# notification_rules and sent_notifications).
REBUILT = sorted(
    [
        *("users", "devices", "geofences", "api_tokens", "sessions", "device_commands", "maintenances"),
        *("notification_rules", "reports", "events", "positions", "sent_notifications"),
    ]
)

# A row in every table of revision 0001. Device 2 is deleted below the highest id (harmless), and
# position 3, the highest, is deleted while events.position_id (no foreign key) still names it.
DATA_AT_0001 = """
INSERT INTO users (id, name, email, password_hash, role, disabled, created_at) VALUES
    (1, 'admin', 'admin@example.com', NULL, 'admin', 0, '2026-01-01 00:00:00'),
    (2, 'Alice', 'Alice@Example.COM', 'scrypt$x', 'user', 0, '2026-01-02 00:00:00'),
    (3, 'Émile', 'ÉMILE@example.com', NULL, 'user', 1, '2026-01-03 00:00:00');
INSERT INTO devices (id, unique_id, name, status, disabled, last_update, position_id, speed_limit,
                     total_distance, motion, attributes, created_at) VALUES
    (1, 'imei-1', 'van', 'online', 0, '2026-01-05 10:00:00', 2, 50.0, 1234.5, 1, '{"fuel": 3}', '2026-01-01 00:00:00'),
    (2, 'imei-2', 'gone', 'offline', 0, NULL, NULL, NULL, 0.0, 0, '{}', '2026-01-01 00:00:00'),
    (3, 'imei-3', 'truck', 'offline', 1, NULL, NULL, NULL, 0.0, 0, '{}', '2026-01-01 00:00:00');
INSERT INTO geofences (id, name, description, area, attributes) VALUES
    (1, 'depot', 'the yard', 'CIRCLE (52.5 13.4, 200)', '{}');
INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, last_used_at) VALUES
    (1, 2, 'cli', 'hash-token-1', '2026-01-02 00:00:00', NULL);
INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) VALUES
    (1, 3, 'hash-session-1', '2026-01-03 00:00:00', '2027-01-03 00:00:00');
INSERT INTO device_commands (id, device_id, type, status, attributes, created_at, sent_at) VALUES
    (1, 1, 'positionPeriodic', 'queued', '{"frequency": 60}', '2026-01-04 00:00:00', NULL);
INSERT INTO device_geofences (device_id, geofence_id) VALUES (1, 1);
INSERT INTO user_devices (user_id, device_id) VALUES (2, 1), (3, 3), (3, 2);
INSERT INTO positions (id, device_id, protocol, fix_time, server_time, latitude, longitude, altitude, speed,
                       course, accuracy, valid, attributes) VALUES
    (1, 1, 'osmand', '2026-01-05 09:00:00', '2026-01-05 09:00:01', 52.5, 13.4, 30.0, 10.0, 90.0, 5.0, 1, '{}'),
    (2, 1, 'osmand', '2026-01-05 10:00:00', '2026-01-05 10:00:01', 52.6, 13.5, 31.0, 12.0, 95.0, 5.0, 1, '{"motion": true}'),
    (3, 3, 'osmand', '2026-01-05 11:00:00', '2026-01-05 11:00:01', 48.1, 11.6, 500.0, 0.0, 0.0, 9.0, 0, '{}');
INSERT INTO maintenances (id, device_id, name, type, start, period, last_notified, attributes) VALUES
    (1, 1, 'oil', 'totalDistance', 0.0, 10000.0, NULL, '{}');
INSERT INTO events (id, type, device_id, event_time, position_id, geofence_id, maintenance_id, attributes) VALUES
    (1, 'geofenceEnter', 1, '2026-01-05 10:00:00', 2, 1, NULL, '{}'),
    (2, 'deviceOverspeed', 3, '2026-01-05 11:00:00', 3, NULL, NULL, '{"speed": 80}');
INSERT INTO notification_rules (id, user_id, event_type, all_devices, channels, attributes) VALUES
    (1, 2, 'geofenceEnter', 1, '["web"]', '{}');
INSERT INTO sent_notifications (id, rule_id, user_id, event_id, channel, status, error, sent_at, attributes) VALUES
    (1, 1, 2, 1, 'web', 'sent', NULL, '2026-01-05 10:00:02', '{}');
INSERT INTO reports (id, user_id, kind, parameters, status, formats, row_counts, summary, error, task_id,
                     created_at, started_at, finished_at) VALUES
    (1, 2, 'route', '{"deviceIds": [1]}', 'complete', '["csv"]', '{"route": 2}', '{}', NULL, 'task-1',
     '2026-01-06 00:00:00', '2026-01-06 00:00:01', '2026-01-06 00:00:02');
INSERT INTO report_files (report_id, format, content_type, content, size, created_at) VALUES
    (1, 'csv', 'text/csv', X'6964', 2, '2026-01-06 00:00:02');
INSERT INTO job_records (id, name, queue, args, state, user_id, enqueued_at, started_at, finished_at, tries,
                         worker, error_type, error_message, traceback, result, progress, progress_message) VALUES
    ('job-1', 'build_report', 'reports', '{"report_id": 1}', 'complete', 2, '2026-01-06 00:00:00', NULL, NULL, 1,
     NULL, NULL, NULL, NULL, NULL, 100.0, '');
DELETE FROM devices WHERE id = 2;
DELETE FROM positions WHERE id = 3;
"""


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA foreign_keys=ON")  # as the application's connections have it
    return connection


def _sqlite_at(tmp_path: Path, revision: str, data: str) -> tuple[Path, str]:
    path = tmp_path / "tracker.db"
    url = f"sqlite:///{path}"
    command.upgrade(alembic_config(url), revision)
    with closing(_connect(path)) as connection:
        connection.executescript(data)
    return path, url


def _contents(connection: sqlite3.Connection, columns: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the given tables, with the given columns only (later revisions add some)."""
    return {
        table: sorted(connection.execute(f"SELECT {', '.join(names)} FROM {table}").fetchall(), key=repr)  # noqa: S608
        for table, names in columns.items()
    }


def _structure(connection: sqlite3.Connection, table: str) -> dict[str, Any]:
    """Columns, foreign keys, unique constraints and indexes of a table, as SQLite reports them."""
    indexes = set()
    for _, name, unique, origin, partial in connection.execute(f"PRAGMA index_list({table})"):
        columns = tuple(row[2] for row in connection.execute(f"PRAGMA index_info({name})"))
        # A UNIQUE constraint's automatic index is named after the table's position in the schema.
        indexes.add((None if origin == "u" else name, unique, origin, partial, columns))
    return {
        "columns": connection.execute(f"PRAGMA table_info({table})").fetchall(),
        "foreign keys": sorted(row[2:] for row in connection.execute(f"PRAGMA foreign_key_list({table})")),
        "indexes": indexes,
    }


def _autoincrement_tables(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
    return {name for name, sql in rows if "AUTOINCREMENT" in sql}


def _insert_device(connection: sqlite3.Connection, unique_id: str) -> int:
    row = connection.execute(
        "INSERT INTO devices (unique_id, name, status, disabled, total_distance, motion, attributes, created_at)"
        " VALUES (?, ?, 'offline', 0, 0.0, 0, '{}', '2026-02-01 00:00:00') RETURNING id",
        (unique_id, unique_id),
    ).fetchone()
    return int(row[0])


def _insert_user(connection: sqlite3.Connection, email: str) -> int:
    row = connection.execute(
        "INSERT INTO users (name, email, role, disabled, created_at)"
        " VALUES (?, ?, 'user', 0, '2026-02-01 00:00:00') RETURNING id",
        (email, email),
    ).fetchone()
    return int(row[0])


def _insert_position(connection: sqlite3.Connection, device_id: int, fix_time: str) -> int:
    row = connection.execute(
        "INSERT INTO positions (device_id, protocol, fix_time, server_time, latitude, longitude, altitude, speed,"
        " course, accuracy, valid, attributes) VALUES (?, 'osmand', ?, ?, 0, 0, 0, 0, 0, 0, 1, '{}') RETURNING id",
        (device_id, fix_time, fix_time),
    ).fetchone()
    return int(row[0])


async def test_the_id_of_a_deleted_row_is_never_handed_out_again(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        users = [User(name=f"owner {n}", email=f"owner{n}@example.com") for n in (1, 2)]
        devices = [Device(unique_id=f"imei-{n}", name=f"device {n}") for n in (1, 2)]
        session.add_all([*users, *devices])
    user_ids = [user.id for user in users if user.id is not None]
    device_ids = [device.id for device in devices if device.id is not None]
    async with transaction(sessions) as session:
        await session.execute(sa.delete(User).where(col(User.id) == max(user_ids)))
        await session.execute(sa.delete(Device).where(col(Device.id) == max(device_ids)))
    async with transaction(sessions) as session:
        user = User(name="someone else", email="someone@example.com")
        device = Device(unique_id="imei-3", name="someone else's device")
        session.add_all([user, device])
    assert user.id is not None
    assert user.id > max(user_ids)
    assert device.id is not None
    assert device.id > max(device_ids)


def test_upgrading_a_0001_sqlite_database_keeps_every_row_and_stops_reusing_ids(tmp_path: Path) -> None:
    path, url = _sqlite_at(tmp_path, "0001", DATA_AT_0001)
    with closing(_connect(path)) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {
            table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            for table in tables
            if table != "alembic_version"
        }
        before = _contents(connection, columns)
        structure_before = {table: _structure(connection, table) for table in REBUILT}

    command.upgrade(alembic_config(url), "0004")

    with closing(_connect(path)) as connection:
        expected = dict(before)
        email = columns["users"].index("email")
        expected["users"] = sorted((*row[:email], row[email].lower(), *row[email + 1 :]) for row in before["users"])
        assert _contents(connection, columns) == expected
        assert {table: _structure(connection, table) for table in REBUILT} == structure_before
        assert _autoincrement_tables(connection) == set(REBUILT)
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []

        # The foreign keys still act: deleting a user takes their session and device links along.
        connection.execute("DELETE FROM users WHERE id = 3")
        assert connection.execute("SELECT count(*) FROM sessions WHERE user_id = 3").fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM user_devices WHERE user_id = 3").fetchone() == (0,)
        with pytest.raises(sqlite3.IntegrityError):
            _insert_position(connection, 999, "2026-02-01 00:00:00")

        # Position 3 was deleted before the upgrade, but an event still names it: never handed out again.
        first_position = _insert_position(connection, 1, "2026-02-01 00:00:00")
        assert first_position == 4
        device = _insert_device(connection, "imei-new")
        assert device == 4
        user = _insert_user(connection, "new@example.com")
        assert user == 4
        connection.execute("DELETE FROM positions WHERE id = ?", (first_position,))
        connection.execute("DELETE FROM devices WHERE id = ?", (device,))
        connection.execute("DELETE FROM users WHERE id = ?", (user,))
        assert _insert_position(connection, 1, "2026-02-02 00:00:00") == 5
        assert _insert_device(connection, "imei-newer") == 5
        assert _insert_user(connection, "newer@example.com") == 5
        connection.commit()


def _migrate_in_a_process(url: str) -> subprocess.CompletedProcess[str]:
    """`tracker-jobs migrate`, as an operator runs it. In a process of its own, too: alembic/env.py
    leaves its engine (and an open connection) behind when a migration raises."""
    return subprocess.run(
        tracker_jobs_command("migrate"),
        env=clean_env(TRACKER_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_emails_that_differ_only_in_case_stop_the_upgrade_before_it_changes_anything(tmp_path: Path) -> None:
    path, url = _sqlite_at(
        tmp_path,
        "0003",
        "INSERT INTO users (name, email, role, disabled, created_at) VALUES"
        " ('one', 'Bob@example.com', 'user', 0, '2026-01-01 00:00:00'),"
        " ('two', 'bob@example.com', 'user', 0, '2026-01-01 00:00:00'),"
        " ('three', 'Carol@example.com', 'user', 0, '2026-01-01 00:00:00')",
    )
    migrate = _migrate_in_a_process(url)
    assert migrate.returncode != 0
    assert "Bob@example.com, bob@example.com" in migrate.stderr
    with closing(_connect(path)) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
        emails = {row[0] for row in connection.execute("SELECT email FROM users")}
        assert emails == {"Bob@example.com", "bob@example.com", "Carol@example.com"}
        assert _autoincrement_tables(connection) == set()


def test_a_rebuild_that_fails_halfway_leaves_the_tables_as_they_were(tmp_path: Path) -> None:
    # A leftover of some earlier interrupted batch operation: the rebuild of devices, the second
    # table, cannot create its copy, after users has been rebuilt already.
    path, url = _sqlite_at(tmp_path, "0001", DATA_AT_0001 + "CREATE TABLE _alembic_tmp_devices (id INTEGER);")
    command.upgrade(alembic_config(url), "0003")
    with closing(_connect(path)) as connection:
        tables = {row[0]: row[1] for row in connection.execute("SELECT name, sql FROM sqlite_master")}
        users = connection.execute("SELECT * FROM users ORDER BY id").fetchall()

    migrate = _migrate_in_a_process(url)
    assert migrate.returncode != 0
    assert "_alembic_tmp_devices" in migrate.stderr
    with closing(_connect(path)) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
        assert {row[0]: row[1] for row in connection.execute("SELECT name, sql FROM sqlite_master")} == tables
        # Only the emails were committed before the rebuild began; lowering them again is harmless.
        assert connection.execute("SELECT * FROM users ORDER BY id").fetchall() == [
            (*row[:2], row[2].lower(), *row[3:]) for row in users
        ]


def test_downgrading_keeps_every_row_and_lowercase_emails(tmp_path: Path) -> None:
    path, url = _sqlite_at(tmp_path, "0001", DATA_AT_0001)
    command.upgrade(alembic_config(url), "0004")
    with closing(_connect(path)) as connection:
        columns = {table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")] for table in REBUILT}
        upgraded = _contents(connection, columns)
        structure = {table: _structure(connection, table) for table in REBUILT}

    command.downgrade(alembic_config(url), "0003")
    with closing(_connect(path)) as connection:
        assert _contents(connection, columns) == upgraded
        assert {table: _structure(connection, table) for table in REBUILT} == structure
        assert _autoincrement_tables(connection) == set()
        assert connection.execute("SELECT count(*) FROM sqlite_sequence").fetchone() == (0,)
        assert "alice@example.com" in {row[0] for row in connection.execute("SELECT email FROM users")}

    command.upgrade(alembic_config(url), "0004")
    with closing(_connect(path)) as connection:
        assert _contents(connection, columns) == upgraded
        assert _autoincrement_tables(connection) == set(REBUILT)


def _run_sql(url: str, *statements: str, autocommit: bool = False) -> list[Any]:
    """The statements in one transaction (or none); the rows of the last one that returns any."""

    async def run() -> list[Any]:
        engine = create_engine(url)
        rows: list[Any] = []
        try:
            async with engine.connect() as connection:
                if autocommit:
                    connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                for statement in statements:
                    result = await connection.execute(sa.text(statement))
                    if result.returns_rows:
                        rows = list(result.all())
                await connection.commit()
        finally:
            await engine.dispose()
        return rows

    return asyncio.run(run())


@pytest.fixture
def scratch_postgres_url() -> Iterator[str]:
    """An empty database of its own on the test server: the shared one is already at the newest revision."""
    name = f"tracker_ids_{uuid.uuid4().hex[:12]}"
    _run_sql(POSTGRES_URL, f'CREATE DATABASE "{name}"', autocommit=True)
    try:
        yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _run_sql(POSTGRES_URL, f'DROP DATABASE "{name}" WITH (FORCE)', autocommit=True)


def test_upgrading_postgresql_lowercases_emails_and_keeps_its_sequences(scratch_postgres_url: str) -> None:
    url = scratch_postgres_url
    command.upgrade(alembic_config(url), "0003")
    _run_sql(
        url,
        "INSERT INTO users (name, email, role, disabled, created_at) VALUES"
        " ('Alice', 'Alice@Example.COM', 'user', false, now()), ('Émile', 'ÉMILE@example.com', 'user', false, now())",
        "INSERT INTO devices (unique_id, name, status, disabled, total_distance, motion, attributes, created_at)"
        " SELECT 'imei-' || n, 'device', 'offline', false, 0, false, '{}', now() FROM generate_series(1, 3) AS n",
        "DELETE FROM devices WHERE id = 3",
    )
    command.upgrade(alembic_config(url), "head")
    emails = _run_sql(url, "SELECT email FROM users ORDER BY id")
    assert [row[0] for row in emails] == ["alice@example.com", "émile@example.com"]
    new_device = _run_sql(
        url,
        "INSERT INTO devices (unique_id, name, status, disabled, total_distance, motion, attributes, created_at)"
        " VALUES ('imei-4', 'device', 'offline', false, 0, false, '{}', now()) RETURNING id",
    )
    assert new_device[0][0] == 4
