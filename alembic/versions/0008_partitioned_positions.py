"""devices.position_time (the newest position's fix time); positions range-partitioned by fix time on PostgreSQL, a partition a day and a default one
(tracker_jobs/cleanup/partitions.py explains the choice and keeps them); existing rows are copied over
in chunks of ids, keeping their ids. SQLite keeps its one table (retention deletes there in chunks).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:40:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK_IDS = 200_000
AHEAD_DAYS = 7  # as cleanup/partitions.py makes them
OLDEST_DAYS = 400  # rows older than this go to the default partition (retention trims them)


def _copy_in_chunks(source: str, target: str) -> None:
    bind = op.get_bind()
    low, high = bind.execute(sa.text(f"SELECT min(id), max(id) FROM {source}")).one()  # noqa: S608 (our table names)
    if low is None:
        return
    for start in range(int(low), int(high) + 1, CHUNK_IDS):
        bind.execute(
            sa.text(f"INSERT INTO {target} SELECT * FROM {source} WHERE id >= :start AND id < :end"),  # noqa: S608
            {"start": start, "end": start + CHUNK_IDS},
        )


def _daily_partitions() -> None:
    """A partition for each day from the oldest row (at most OLDEST_DAYS back) to AHEAD_DAYS ahead."""
    bind = op.get_bind()
    today = datetime.now(UTC).date()
    oldest = bind.execute(sa.text("SELECT min(fix_time) FROM positions_unpartitioned")).scalar()
    first = max(oldest.astimezone(UTC).date(), today - timedelta(days=OLDEST_DAYS)) if oldest else today
    first = min(first, today)
    for offset in range((today - first).days + AHEAD_DAYS + 1):
        day = first + timedelta(days=offset)
        lower = datetime(day.year, day.month, day.day, tzinfo=UTC)
        op.execute(
            f"CREATE TABLE positions_p{day:%Y%m%d} PARTITION OF positions"
            f" FOR VALUES FROM ('{lower}') TO ('{lower + timedelta(days=1)}')"
        )


def _new_positions_table(old: str, primary_key: str, partitioned: bool) -> None:
    """Rename `positions` to `old` (and its constraints, freeing their names) and make a new, empty
    `positions` like it: the same columns and defaults (the id sequence, which moves to it), the keys."""
    op.execute(f"ALTER TABLE positions RENAME TO {old}")
    for name in ("pk_positions", "uq_positions_device_id_fix_time", "fk_positions_device_id_devices"):
        op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {name} TO {name}_{old}")
    op.execute(
        f"CREATE TABLE positions (LIKE {old} INCLUDING DEFAULTS,"
        f" CONSTRAINT pk_positions PRIMARY KEY ({primary_key}),"
        " CONSTRAINT uq_positions_device_id_fix_time UNIQUE (device_id, fix_time),"
        " CONSTRAINT fk_positions_device_id_devices FOREIGN KEY (device_id) REFERENCES devices (id) ON DELETE CASCADE"
        f"){' PARTITION BY RANGE (fix_time)' if partitioned else ''}"
    )
    op.execute("ALTER SEQUENCE positions_id_seq OWNED BY positions.id")


def upgrade() -> None:
    # Each device's newest position is found by its id and its fix time: in one partition, not in all.
    op.add_column("devices", sa.Column("position_time", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE devices SET position_time = (SELECT p.fix_time FROM positions AS p WHERE p.id = devices.position_id)"
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    # A partitioned table's unique keys include its partition key, so the primary key is (id, fix_time):
    # ids stay unique by the sequence.
    _new_positions_table("positions_unpartitioned", "id, fix_time", partitioned=True)
    op.execute("CREATE TABLE positions_default PARTITION OF positions DEFAULT")
    _daily_partitions()
    _copy_in_chunks("positions_unpartitioned", "positions")
    op.execute("DROP TABLE positions_unpartitioned")
    op.execute("ANALYZE positions")


def downgrade() -> None:
    # Not in batch mode: on SQLite that rebuilds devices, and dropping the old one would take every
    # position with it (foreign keys are on); SQLite drops a column in place.
    op.drop_column("devices", "position_time")
    if op.get_bind().dialect.name != "postgresql":
        return
    _new_positions_table("positions_partitioned", "id", partitioned=False)
    _copy_in_chunks("positions_partitioned", "positions")
    op.execute("DROP TABLE positions_partitioned")  # its partitions with it
