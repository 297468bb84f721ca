"""devices keep their trip detection state (motion_state) on their own row, not on their newest
position; maintenance items apply to the devices linked to them (device_maintenances); a dailySummary
linked to no device becomes `always` (it covered every device before)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 06:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Devices start their trip detection afresh (as a device without state does): the state the
    # positions carried as `tripState` had another shape, and positions keep it as history only.
    op.add_column("devices", sa.Column("motion_state", JSON, nullable=True))
    op.create_table(
        "device_maintenances",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("maintenance_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_maintenances_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["maintenance_id"],
            ["maintenances.id"],
            name=op.f("fk_device_maintenances_maintenance_id_maintenances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "maintenance_id", name=op.f("pk_device_maintenances")),
    )
    op.create_index(op.f("ix_device_maintenances_maintenance_id"), "device_maintenances", ["maintenance_id"])
    # Every item applied to the device it was created for: it still does.
    op.execute("INSERT INTO device_maintenances (device_id, maintenance_id) SELECT device_id, id FROM maintenances")
    # A dailySummary not `always` now covers only its linked devices; one linked to none covered every
    # device the user may see before: it stays so, as `always`.
    op.execute(
        "UPDATE notifications SET always = true WHERE type = 'dailySummary' AND NOT always"
        " AND NOT EXISTS (SELECT 1 FROM device_notifications AS dn WHERE dn.notification_id = notifications.id)"
    )


def downgrade() -> None:
    # Items keep only the device they were created for.
    op.drop_index(op.f("ix_device_maintenances_maintenance_id"), table_name="device_maintenances")
    op.drop_table("device_maintenances")
    op.drop_column("devices", "motion_state")
