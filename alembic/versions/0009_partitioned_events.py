"""events range-partitioned by event time on PostgreSQL, a partition a week and a default one
(tracker_jobs/cleanup/partitions.py explains the choice and keeps them); existing events are copied over
a week at a time, keeping their ids. SQLite keeps its one table (retention deletes there in chunks).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 17:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AHEAD_DAYS = 7  # as cleanup/partitions.py makes them
OLDEST_DAYS = 400  # events older than this go to the default partition (retention removes them)
WEEK = timedelta(days=7)
CONSTRAINTS = ("pk_events", "fk_events_device_id_devices", "fk_events_geofence_id_geofences")
INDEXES = {
    "ix_events_device_id_event_time": "(device_id, event_time)",
    "ix_events_event_time": "(event_time)",
    "uq_events_device_id_type_event_time_subject": "(device_id, type, event_time, subject)",
}


def _monday(day: date) -> datetime:
    start = day - timedelta(days=day.weekday())
    return datetime(start.year, start.month, start.day, tzinfo=UTC)


def _set_aside(old: str) -> None:
    """Rename `events` to `old`, with its constraints and indexes (freeing their names)."""
    op.execute(f"ALTER TABLE events RENAME TO {old}")
    for name in CONSTRAINTS:
        op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {name} TO {name}_old")
    for name in INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_old")  # within PostgreSQL's 63 characters


def _new_events_table(old: str, primary_key: str, partitioned: bool) -> None:
    """A new, empty `events` like `old`: the same columns and defaults (the id sequence moves to it) and
    foreign keys; its indexes come once it is filled (one sort each, not a row at a time)."""
    op.execute(
        f"CREATE TABLE events (LIKE {old} INCLUDING DEFAULTS,"
        f" CONSTRAINT pk_events PRIMARY KEY ({primary_key}),"
        " CONSTRAINT fk_events_device_id_devices FOREIGN KEY (device_id) REFERENCES devices (id) ON DELETE CASCADE,"
        " CONSTRAINT fk_events_geofence_id_geofences FOREIGN KEY (geofence_id) REFERENCES geofences (id)"
        f" ON DELETE SET NULL){' PARTITION BY RANGE (event_time)' if partitioned else ''}"
    )
    op.execute("ALTER SEQUENCE events_id_seq OWNED BY events.id")


def _index_and_drop(old: str) -> None:
    for name, columns in INDEXES.items():
        op.execute(f"CREATE {'UNIQUE ' if name.startswith('uq_') else ''}INDEX {name} ON events {columns}")
    op.execute(f"DROP TABLE {old}")
    op.execute("ANALYZE events")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # A partitioned table's unique keys include its partition key, so the primary key is (id, event_time):
    # ids stay unique by the sequence.
    _set_aside("events_unpartitioned")
    _new_events_table("events_unpartitioned", "id, event_time", partitioned=True)
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    today = datetime.now(UTC).date()
    oldest = op.get_bind().execute(sa.text("SELECT min(event_time) FROM events_unpartitioned")).scalar()
    first = _monday(max(oldest.astimezone(UTC).date(), today - timedelta(days=OLDEST_DAYS)) if oldest else today)
    first = min(first, _monday(today))
    week = first
    while week <= _monday(today + timedelta(days=AHEAD_DAYS)):
        name = f"events_p{week:%Y%m%d}"
        op.execute(f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ('{week}') TO ('{week + WEEK}')")
        # A week at a time, through the old table's event_time index: each statement a bounded piece.
        copy = f"INSERT INTO {name} SELECT * FROM events_unpartitioned WHERE event_time >= :low AND event_time < :high"  # noqa: S608
        op.get_bind().execute(sa.text(copy), {"low": week, "high": week + WEEK})
        week += WEEK
    op.get_bind().execute(
        sa.text("INSERT INTO events SELECT * FROM events_unpartitioned WHERE event_time < :low OR event_time >= :high"),
        {"low": first, "high": week},
    )
    _index_and_drop("events_unpartitioned")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _set_aside("events_partitioned")
    _new_events_table("events_partitioned", "id", partitioned=False)
    op.execute("INSERT INTO events SELECT * FROM events_partitioned")
    _index_and_drop("events_partitioned")  # its partitions with it
