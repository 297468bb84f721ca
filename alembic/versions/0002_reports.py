"""reports: store each report file in parts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing files become their own part 0; the default only fills them in.
    with op.batch_alter_table("report_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("part", sa.Integer(), nullable=False, server_default="0"))
        batch_op.drop_constraint("pk_report_files", type_="primary")
        batch_op.create_primary_key("pk_report_files", ["report_id", "format", "part"])
    with op.batch_alter_table("report_files", schema=None) as batch_op:
        batch_op.alter_column("part", server_default=None)


def downgrade() -> None:
    # Keeps the first part of each file only: the older schema holds one row per file.
    op.execute("DELETE FROM report_files WHERE part <> 0")
    with op.batch_alter_table("report_files", schema=None) as batch_op:
        batch_op.drop_constraint("pk_report_files", type_="primary")
        batch_op.create_primary_key("pk_report_files", ["report_id", "format"])
        batch_op.drop_column("part")
