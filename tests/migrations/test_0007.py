"""Revision 0007 on a database with data: every maintenance item applies to its device, and a
dailySummary linked to no device (which covered every device before) becomes `always`."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from alembic import command
from tracker_jobs.migrations import alembic_config

DATA_AT_0006 = """
INSERT INTO devices (id, unique_id, name, status, disabled, total_distance, motion, attributes, created_at) VALUES
    (1, 'imei-1', 'van', 'offline', 0, 0.0, 0, '{}', '2026-01-01 00:00:00'),
    (2, 'imei-2', 'truck', 'offline', 0, 0.0, 0, '{}', '2026-01-01 00:00:00');
INSERT INTO maintenances (id, device_id, name, type, start, period, attributes) VALUES
    (1, 1, 'oil', 'totalDistance', 0.0, 10000.0, '{}'),
    (2, 2, 'tyres', 'totalDistance', 0.0, 40000.0, '{}');
INSERT INTO notifications (id, type, description, always, notificators, attributes) VALUES
    (1, 'dailySummary', '', 0, 'web', '{}'),
    (2, 'dailySummary', '', 0, 'web', '{}'),
    (3, 'geofenceEnter', '', 0, 'web', '{}');
INSERT INTO device_notifications (device_id, notification_id) VALUES (2, 2);
"""


def test_0007_links_each_item_to_its_device_and_keeps_unlinked_summaries_covering_all(tmp_path: Path) -> None:
    path = tmp_path / "tracker.db"
    config = alembic_config(f"sqlite:///{path}")
    command.upgrade(config, "0006")
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(DATA_AT_0006)
    command.upgrade(config, "0007")
    with closing(sqlite3.connect(path)) as connection:
        links = connection.execute("SELECT device_id, maintenance_id FROM device_maintenances ORDER BY 2").fetchall()
        always = connection.execute("SELECT id, always FROM notifications ORDER BY id").fetchall()
        states = connection.execute("SELECT motion_state FROM devices").fetchall()
    assert links == [(1, 1), (2, 2)]
    assert always == [(1, 1), (2, 0), (3, 0)]  # linked to none: always; linked, or no summary: as it was
    assert states == [(None,), (None,)]  # trip detection starts afresh
    command.downgrade(config, "0006")
    with closing(sqlite3.connect(path)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in connection.execute("PRAGMA table_info(devices)")}
    assert "device_maintenances" not in tables
    assert "motion_state" not in columns
