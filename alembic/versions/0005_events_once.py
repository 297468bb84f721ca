"""events: stored once per device, type, time and subject, with their own coordinates; geofences:
revisions, and the users each belongs to

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
    # Nothing kept events unique before: of any that repeat a device, type and time, keep the first.
    op.execute(
        "DELETE FROM events WHERE id NOT IN (SELECT MIN(id) FROM events GROUP BY device_id, type, event_time, subject)"
    )
    op.create_index(
        "uq_events_device_id_type_event_time_subject",
        "events",
        ["device_id", "type", "event_time", "subject"],
        unique=True,
    )
    op.add_column("geofences", sa.Column("revision", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.create_table(
        "user_geofences",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("geofence_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["geofence_id"], ["geofences.id"], name=op.f("fk_user_geofences_geofence_id_geofences"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_geofences_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "geofence_id", name=op.f("pk_user_geofences")),
    )
    op.create_index(op.f("ix_user_geofences_geofence_id"), "user_geofences", ["geofence_id"])


def downgrade() -> None:
    # Events that differ only by subject (two alarms at one time) repeat a device, type and time once
    # `subject` is gone; upgrading again keeps the first of them.
    op.drop_index(op.f("ix_user_geofences_geofence_id"), table_name="user_geofences")
    op.drop_table("user_geofences")
    op.drop_column("geofences", "revision")
    op.drop_index("uq_events_device_id_type_event_time_subject", table_name="events")
    op.drop_column("events", "longitude")
    op.drop_column("events", "latitude")
    op.drop_column("events", "subject")
