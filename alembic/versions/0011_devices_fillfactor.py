"""devices keep half of each page free on PostgreSQL (fillfactor 50): every position batch rewrites its
devices' rows, and a new version fits beside the old one on its page (a HOT update: no index entry, the
old version pruned on the page) instead of moving to another page and leaving the table to grow.
bench/cleanup.py --quick prints it: with the default (100) and two UPDATEs a batch, 1,000 rows in 6,710
pages after a minute of ingest, 37% of the updates HOT; every read of all of it (retention's sweeps
and detach) paid for that, 37 of a sweep statement's 57 ms in an EXPLAIN ANALYZE. With 50, and the
batch's two updates made one (positions/store.py), 513 pages, 95% HOT. Pages written before this keep
their fill until their rows move. SQLite: nothing (no such setting).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 03:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE devices SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE devices RESET (fillfactor)")
