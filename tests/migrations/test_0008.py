"""Revision 0008 on a PostgreSQL database that holds positions: they move into the partitioned table in
chunks, with their ids; a day a partition from the oldest (at most 400 days back) to a week ahead, older
rows in the default partition; new positions take ids after the old; and back again."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from alembic import command
from tests.support.plain_sql import add_device, partition_bounds, run, sql
from tracker_jobs.migrations import alembic_config

NOW = datetime.now(UTC)
# (id, age in days): ids spread over several of the migration's 200,000-id chunks; one fix 500 days old.
ROWS = [(1, 0), (2, 3), (150_000, 10), (450_000, 30), (450_001, 500), (900_000, 1)]


def positions(url: str) -> list[tuple[int, int]]:
    rows = run(sql(url, "SELECT id, fix_time FROM positions ORDER BY id"))
    return [(row["id"], (NOW - row["fix_time"]).days) for row in rows]


def test_0008_moves_every_position_into_day_partitions_keeping_ids(database: str) -> None:
    config = alembic_config(database)
    command.upgrade(config, "0007")
    add_device(database, position_id=900_000)
    for position_id, age in ROWS:
        run(
            sql(
                database,
                "INSERT INTO positions (id, device_id, protocol, fix_time, server_time, latitude, longitude,"
                " altitude, speed, course, accuracy, valid, attributes) VALUES ($1, 1, 'osmand', $2, $2, 50, 8,"
                " 0, 0, 0, 0, true, '{}')",
                position_id,
                NOW - timedelta(days=age, minutes=1),
            )
        )
    run(sql(database, "SELECT setval('positions_id_seq', 900000)"))

    day_before = datetime.now(UTC).date()
    command.upgrade(config, "0008")
    day_after = datetime.now(UTC).date()  # the migration's own today: either, when midnight came between

    assert positions(database) == [(position_id, age) for position_id, age in ROWS]
    newest = run(sql(database, "SELECT position_time FROM devices"))
    assert newest[0]["position_time"] == NOW - timedelta(days=1, minutes=1)  # position 900,000's fix time
    partitions = partition_bounds(database, "positions")

    def made_on(today: date) -> set[str]:
        # From 400 days back (the oldest row is older) to a week ahead, and the default one.
        days = [today - timedelta(days=offset) for offset in range(-7, 401)]
        return {f"positions_p{day:%Y%m%d}" for day in days} | {"positions_default"}

    assert set(partitions) in (made_on(day_before), made_on(day_after))
    assert partitions["positions_default"] == "DEFAULT"
    in_default = run(sql(database, "SELECT id FROM positions_default"))
    assert [row["id"] for row in in_default] == [450_001]  # 500 days old: no partition of its own
    added = run(
        sql(
            database,
            "INSERT INTO positions (device_id, protocol, fix_time, server_time, latitude, longitude, altitude,"
            " speed, course, accuracy, valid, attributes) VALUES (1, 'osmand', $1, $1, 50, 8, 0, 0, 0, 0,"
            " true, '{}') RETURNING id",
            NOW - timedelta(minutes=2),
        )
    )
    assert added[0]["id"] == 900_001  # the sequence carried on: no id is used twice

    command.downgrade(config, "0007")

    assert positions(database) == [*((position_id, age) for position_id, age in ROWS), (900_001, 0)]
    assert run(sql(database, "SELECT 1 FROM pg_partitioned_table")) == []
    assert run(sql(database, "SELECT to_regclass('positions_default') AS t"))[0]["t"] is None


def test_0008_on_sqlite_fills_position_time_and_its_downgrade_keeps_every_position(tmp_path: Path) -> None:
    path = tmp_path / "tracker.db"
    config = alembic_config(f"sqlite:///{path}")
    command.upgrade(config, "0007")
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(
            "INSERT INTO devices (id, unique_id, name, status, disabled, total_distance, motion, attributes,"
            " created_at, position_id) VALUES (1, 'imei-1', 'van', 'offline', 0, 0.0, 0, '{}', '2026-01-01 00:00:00', 7);"
            "INSERT INTO positions (id, device_id, protocol, fix_time, server_time, latitude, longitude, altitude,"
            " speed, course, accuracy, valid, attributes) VALUES (7, 1, 'osmand', '2026-01-02 03:04:05.000000',"
            " '2026-01-02 03:04:05.000000', 50, 8, 0, 0, 0, 0, 1, '{}');"
        )
    command.upgrade(config, "0008")
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT position_time FROM devices").fetchall() == [("2026-01-02 03:04:05.000000",)]
    command.downgrade(config, "0007")  # in place: a rebuilt devices table would take its positions along
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT id FROM positions").fetchall() == [(7,)]
        assert "position_time" not in {row[1] for row in connection.execute("PRAGMA table_info(devices)")}
