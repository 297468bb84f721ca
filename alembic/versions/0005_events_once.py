"""events: stored once per device, type, time and subject, with their own coordinates; geofence revisions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 23:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns are added and the uniqueness is a unique index, so SQLite changes the tables in place: a
# rebuild would need its foreign keys off (see 0004) and AUTOINCREMENT carried over.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("events", sa.Column("subject", BIG_ID, server_default=sa.text("0"), nullable=False))
    op.add_column("events", sa.Column("latitude", sa.Float(), nullable=True))
    op.add_column("events", sa.Column("longitude", sa.Float(), nullable=True))
    op.create_index(
        "uq_events_device_id_type_event_time_subject",
        "events",
        ["device_id", "type", "event_time", "subject"],
        unique=True,
    )
    op.add_column("geofences", sa.Column("revision", sa.Integer(), server_default=sa.text("1"), nullable=False))


def downgrade() -> None:
    op.drop_column("geofences", "revision")
    op.drop_index("uq_events_device_id_type_event_time_subject", table_name="events")
    op.drop_column("events", "longitude")
    op.drop_column("events", "latitude")
    op.drop_column("events", "subject")
