"""operations: job record revisions and retries, job statistics rollups

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 19:20:42.274501
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Duration histogram buckets: 20 upper bounds and one bucket above them (monitor/models.py).
BUCKETS = [f"bucket_{index:02d}" for index in range(21)]
OUTCOMES = ["complete", "failed", "cancelled", "retried"]


def _rollup_columns(count_type: type[sa.Integer] | type[sa.BigInteger]) -> list[sa.Column]:
    return [
        *(sa.Column(outcome, count_type(), nullable=False) for outcome in OUTCOMES),
        sa.Column("duration_sum_s", sa.Float(), nullable=False),
        sa.Column("duration_max_s", sa.Float(), nullable=False),
        *(sa.Column(bucket, count_type(), nullable=False) for bucket in BUCKETS),
    ]


def upgrade() -> None:
    op.create_table(
        "job_stat_minutes",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        *_rollup_columns(sa.Integer),
        sa.PrimaryKeyConstraint("minute", "name", "queue", name=op.f("pk_job_stat_minutes")),
    )
    op.create_table(
        "job_stat_totals",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        *_rollup_columns(sa.BigInteger),
        sa.PrimaryKeyConstraint("name", "queue", name=op.f("pk_job_stat_totals")),
    )
    with op.batch_alter_table("job_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("retried_as", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_records", schema=None) as batch_op:
        batch_op.drop_column("retried_as")
        batch_op.drop_column("revision")
    op.drop_table("job_stat_totals")
    op.drop_table("job_stat_minutes")
