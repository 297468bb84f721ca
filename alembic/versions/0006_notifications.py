"""notifications in Traccar's shape (linked to users and devices) and the deliveries outbox, in place
of the seed's notification_rules and sent_notifications; users get attributes (their time zone)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 03:00:00.000000
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("users", sa.Column("attributes", JSON, server_default=sa.text("'{}'"), nullable=False))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=512), nullable=False),
        sa.Column("always", sa.Boolean(), nullable=False),
        sa.Column("notificators", sa.String(length=64), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_notifications_type"), "notifications", ["type"])
    for table, owner in (("user_notifications", "users"), ("device_notifications", "devices")):
        column = f"{owner[:-1]}_id"
        op.create_table(
            table,
            sa.Column(column, sa.Integer(), nullable=False),
            sa.Column("notification_id", sa.Integer(), nullable=False),
            sa.ForeignKeyConstraint(
                [column], [f"{owner}.id"], name=op.f(f"fk_{table}_{column}_{owner}"), ondelete="CASCADE"
            ),
            sa.ForeignKeyConstraint(
                ["notification_id"],
                ["notifications.id"],
                name=op.f(f"fk_{table}_notification_id_notifications"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint(column, "notification_id", name=op.f(f"pk_{table}")),
        )
        op.create_index(op.f(f"ix_{table}_notification_id"), table, ["notification_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("event_time", UTC_TIME, nullable=False),
        sa.Column("content", JSON, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("next_attempt_at", UTC_TIME, nullable=False),
        sa.Column("leased_until", UTC_TIME, nullable=True),
        sa.Column("sent_at", UTC_TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_deliveries_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_deliveries_notification_id_notifications"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_deliveries_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_deliveries_event", "deliveries", ["event_id", "notification_id", "user_id", "channel"], unique=True
    )
    op.create_index("ix_deliveries_state_next_attempt_at", "deliveries", ["state", "next_attempt_at"])
    op.create_index(op.f("ix_deliveries_user_id"), "deliveries", ["user_id"])
    op.create_index(op.f("ix_deliveries_device_id"), "deliveries", ["device_id"])
    op.create_index(op.f("ix_deliveries_created_at"), "deliveries", ["created_at"])
    _carry_over_rules()
    op.drop_table("sent_notifications")
    op.drop_table("notification_rules")


def _carry_over_rules() -> None:
    """The seed's rules become notifications linked to their owner (nothing sent them, so the
    record of what was sent has nothing worth keeping)."""
    bind = op.get_bind()
    rules = bind.execute(
        sa.text("SELECT id, user_id, event_type, all_devices, channels, attributes FROM notification_rules")
    )
    notifications = sa.table(
        "notifications",
        sa.column("id", sa.Integer()),
        sa.column("type", sa.String()),
        sa.column("description", sa.String()),
        sa.column("always", sa.Boolean()),
        sa.column("notificators", sa.String()),
        sa.column("attributes", JSON),
    )
    links = sa.table(
        "user_notifications", sa.column("user_id", sa.Integer()), sa.column("notification_id", sa.Integer())
    )
    for rule_id, user_id, event_type, all_devices, channels, attributes in rules.all():
        channels = _loaded(channels) or []
        bind.execute(
            notifications.insert().values(
                id=rule_id,
                type=event_type,
                description="",
                always=bool(all_devices),
                notificators=",".join(str(channel) for channel in channels)[:64],
                attributes=_loaded(attributes) or {},
            )
        )
        bind.execute(links.insert().values(user_id=user_id, notification_id=rule_id))
    if bind.dialect.name == "postgresql":
        bind.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('notifications', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM notifications"
            )
        )


def _loaded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def downgrade() -> None:
    op.create_table(
        "notification_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("all_devices", sa.Boolean(), nullable=False),
        sa.Column("channels", JSON, nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notification_rules_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_rules")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_notification_rules_user_id"), "notification_rules", ["user_id"])
    op.create_table(
        "sent_notifications",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sent_at", UTC_TIME, nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["notification_rules.id"],
            name=op.f("fk_sent_notifications_rule_id_notification_rules"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_sent_notifications_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sent_notifications")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_sent_notifications_user_id"), "sent_notifications", ["user_id"])
    op.create_index(op.f("ix_sent_notifications_sent_at"), "sent_notifications", ["sent_at"])
    op.drop_table("deliveries")
    op.drop_table("device_notifications")
    op.drop_table("user_notifications")
    op.drop_table("notifications")
    op.drop_column("users", "attributes")
