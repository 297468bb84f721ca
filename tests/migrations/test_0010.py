"""Revision 0010 on a database holding the seed's queued commands (PostgreSQL and SQLite): they become
`commands` with their ids, expiring an hour after they were made; new commands take ids after the
largest ever given (a deleted one's included); users keep their rows and their AUTOINCREMENT; and back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from tests.support.plain_sql import add_device, run, sql
from tracker_jobs.migrations import alembic_config

SEED_COMMANDS = (
    "INSERT INTO device_commands (id, device_id, type, status, attributes, created_at) VALUES"
    " (5, 1, 'positionPeriodic', 'queued', '{\"frequency\": 30}', '2026-11-30 10:00:00+00'),"
    " (9, 1, 'engineStop', 'queued', '{}', '2026-11-30 11:00:00+00')"
)
NEW_COMMAND = (
    "INSERT INTO commands (device_id, type, attributes, description, transport, state, created_at, expires_at,"
    " attempts) VALUES (1, 'custom', '{}', '', 'osmand', 'queued', '2026-12-01 00:00:00+00',"
    " '2026-12-01 01:00:00+00', 0) RETURNING id"
)


def test_0010_on_postgresql(database: str) -> None:
    config = alembic_config(database)
    command.upgrade(config, "0009")
    add_device(database)
    run(sql(database, SEED_COMMANDS))
    run(sql(database, "SELECT setval('device_commands_id_seq', 9)"))  # as if the sequence had given both
    run(sql(database, "DELETE FROM device_commands WHERE id = 9"))  # its id is never given again
    command.upgrade(config, "0010")
    rows = run(sql(database, "SELECT id, state, transport, expires_at - created_at AS ttl FROM commands"))
    assert [(row["id"], row["state"], row["transport"], row["ttl"].total_seconds()) for row in rows] == [
        (5, "queued", "osmand", 3600.0)
    ]
    assert run(sql(database, NEW_COMMAND))[0]["id"] == 10
    command.downgrade(config, "0009")
    back = run(sql(database, "SELECT id, status FROM device_commands ORDER BY id"))
    assert [(row["id"], row["status"]) for row in back] == [(5, "queued"), (10, "queued")]
    command.upgrade(config, "head")


def test_0010_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "tracker.db"
    url = f"sqlite:///{path}"
    config = alembic_config(url)
    command.upgrade(config, "0009")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO users (id, name, email, role, disabled, attributes, created_at)"
            " VALUES (1, 'ann', 'ann@example.com', 'admin', 0, '{}', '2026-11-30')"
        )
        connection.execute(
            "INSERT INTO devices (id, unique_id, name, status, disabled, total_distance, motion, attributes,"
            " created_at) VALUES (1, 'imei-1', 'van', 'offline', 0, 0, 0, '{}', '2026-11-30')"
        )
        connection.execute(SEED_COMMANDS.replace("+00", ""))
        connection.execute("DELETE FROM device_commands WHERE id = 9")
    command.upgrade(config, "0010")
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT id, state, created_at, expires_at FROM commands").fetchall()
        assert rows == [(5, "queued", "2026-11-30 10:00:00", "2026-11-30 11:00:00")]
        assert connection.execute(NEW_COMMAND.replace("+00", "")).fetchone() == (10,)
        assert connection.execute("SELECT id, limit_commands FROM users").fetchall() == [(1, 0)]
        users_sql = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'users'").fetchone()[0]
        assert "AUTOINCREMENT" in users_sql
    command.downgrade(config, "0009")
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT id, status FROM device_commands ORDER BY id").fetchall() == [
            (5, "queued"),
            (10, "queued"),
        ]
        assert connection.execute("SELECT id FROM users").fetchall() == [(1,)]
    command.upgrade(config, "head")
