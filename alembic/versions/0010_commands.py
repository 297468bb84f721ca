"""device commands (issue 14): the seed's device_commands become `commands`, with a transport, an
expiry, the states queued -> sent -> answered (or expired, cancelled, failed), the device's result and
gateway tries; `saved_commands`; users.limit_commands (Traccar's limitCommands). Commands the seed
queued are kept with their ids and expire an hour after they were made (they never reached a device).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "commands",
        sa.Column("id", ID, nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("description", sa.String(length=512), nullable=False),
        sa.Column("transport", sa.String(length=16), nullable=False),
        sa.Column("text", sa.String(length=4096), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("sent_at", TIME, nullable=True),
        sa.Column("answered_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("result", sa.String(length=4096), nullable=True),
        sa.Column("result_entry", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_commands_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_commands_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
        sa.UniqueConstraint("result_entry", name=op.f("uq_commands_result_entry")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_commands_device_id_id", "commands", ["device_id", "id"])
    op.create_index("ix_commands_state_expires_at", "commands", ["state", "expires_at"])
    expiry = "datetime(created_at, '+1 hour')" if sqlite else "created_at + interval '1 hour'"
    op.execute(
        "INSERT INTO commands (id, device_id, type, attributes, description, transport, state, created_at,"  # noqa: S608 (our own SQL)
        " expires_at, sent_at, attempts)"
        f" SELECT id, device_id, type, attributes, '', 'osmand', status, created_at, {expiry}, sent_at, 0"
        " FROM device_commands"
    )
    # Ids are never reused: the new table goes on from where the old one's counter stood.
    if sqlite:
        op.execute("DELETE FROM sqlite_sequence WHERE name = 'commands'")
        op.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'commands', seq FROM sqlite_sequence WHERE name = 'device_commands'"
        )
    else:
        op.execute(
            "SELECT setval(pg_get_serial_sequence('commands', 'id'),"
            " greatest(last_value, (SELECT coalesce(max(id), 1) FROM commands)), true) FROM device_commands_id_seq"
        )
    op.drop_table("device_commands")
    op.create_table(
        "saved_commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=512), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_saved_commands_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_commands")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_saved_commands_user_id"), "saved_commands", ["user_id"])
    # A plain ADD COLUMN on SQLite too: a rebuilt users table would lose its AUTOINCREMENT.
    op.add_column("users", sa.Column("limit_commands", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # A plain DROP COLUMN (SQLite 3.35+): rebuilding users would cascade into every table naming it.
    op.drop_column("users", "limit_commands")
    op.drop_index(op.f("ix_saved_commands_user_id"), table_name="saved_commands")
    op.drop_table("saved_commands")
    op.create_table(
        "device_commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("sent_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_commands_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_commands")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_device_commands_device_id"), "device_commands", ["device_id"])
    op.execute(
        "INSERT INTO device_commands (id, device_id, type, status, attributes, created_at, sent_at)"
        " SELECT id, device_id, type, state, attributes, created_at, sent_at FROM commands"
    )
    if sqlite:
        op.execute("DELETE FROM sqlite_sequence WHERE name = 'device_commands'")
        op.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'device_commands', seq FROM sqlite_sequence WHERE name = 'commands'"
        )
    else:
        op.execute(
            "SELECT setval(pg_get_serial_sequence('device_commands', 'id'),"
            " greatest(last_value, (SELECT coalesce(max(id), 1) FROM device_commands)), true) FROM commands_id_seq"
        )
    op.drop_index("ix_commands_state_expires_at", table_name="commands")
    op.drop_index("ix_commands_device_id_id", table_name="commands")
    op.drop_table("commands")
