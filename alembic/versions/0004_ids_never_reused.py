"""ids are never reused on SQLite (AUTOINCREMENT); users' emails stored lowercase

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every table with a surrogate integer id, parents before children. A SQLite rowid table without
# AUTOINCREMENT hands the largest id out again once its row is deleted: a deleted device's id went to
# the next device created, by another user, with whatever still named it (live cache, API clients).
# PostgreSQL sequences never reuse a value, so there is nothing to do there.
TABLES = (
    "users",
    "devices",
    "geofences",
    "api_tokens",
    "sessions",
    "device_commands",
    "maintenances",
    "notification_rules",
    "reports",
    "events",
    "positions",
    "sent_notifications",
)

# Columns that name another table's id without a foreign key, so they may still name a row that is
# gone: the sequence starts above them too, or a new row would take on the deleted row's references.
DANGLING_REFERENCES = {
    "positions": (("devices", "position_id"), ("events", "position_id")),
    "events": (("sent_notifications", "event_id"),),
    "maintenances": (("events", "maintenance_id"),),
}


def upgrade() -> None:
    _lowercase_emails()
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_tables(autoincrement=True)
        _seed_sqlite_sequences()


def downgrade() -> None:
    # Emails stay lowercase: which letters were capitals is not kept anywhere, and the older schema
    # holds lowercase emails as well as any others.
    if op.get_bind().dialect.name == "sqlite":
        # Dropping the AUTOINCREMENT tables also drops their sqlite_sequence rows.
        _rebuild_sqlite_tables(autoincrement=False)


def _normalized(email: str) -> str:
    # As the application normalizes an address it is given (users/service.py), copied here because
    # a migration must keep doing what it did when it was written. In Python, not SQL: SQLite's
    # lower() only folds ASCII, so an "É" would stay and its user could no longer be found.
    return email.strip().lower()


def _lowercase_emails() -> None:
    """Emails are compared and kept unique case-insensitively from now on: stored normalized."""
    users = sa.table("users", sa.column("id", sa.Integer()), sa.column("email", sa.String()))
    bind = op.get_bind()
    rows = bind.execute(sa.select(users.c.id, users.c.email).order_by(users.c.id)).all()
    owners: dict[str, list[str]] = {}
    for _, email in rows:
        owners.setdefault(_normalized(email), []).append(email)
    clashes = sorted(emails for emails in owners.values() if len(emails) > 1)
    if clashes:
        # Merging or renaming accounts is a decision for a person, not for a migration; nothing has
        # been changed yet, so the upgrade can simply be run again once they are resolved.
        listed = "; ".join(", ".join(emails) for emails in clashes)
        raise RuntimeError(
            f"users whose emails differ only in letter case or surrounding spaces must be renamed or removed first: {listed}"
        )
    changed = [
        {"user_id": user_id, "lowered": _normalized(email)}
        for user_id, email in rows
        # Lowercasing can lengthen a few letters ("İ" becomes two characters): one past the column stays as it is.
        if email != _normalized(email) and len(_normalized(email)) <= 256
    ]
    if changed:
        bind.execute(
            users.update().where(users.c.id == sa.bindparam("user_id")).values(email=sa.bindparam("lowered")),
            changed,
        )


def _rebuild_sqlite_tables(*, autoincrement: bool) -> None:
    """SQLite cannot add AUTOINCREMENT to a table: each is copied into a new one, which replaces it
    with the same rows, ids, indexes, constraints and foreign keys."""
    context = op.get_context()
    # Dropping a parent table with foreign keys on deletes its rows first, with ON DELETE CASCADE into
    # the children: every device would take its positions with it. The pragma is ignored inside a
    # transaction, hence the autocommit block; it commits the emails (lowering them again is harmless).
    with context.autocommit_block():
        op.execute("PRAGMA foreign_keys=OFF")
    bind = op.get_bind()
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("SQLite foreign keys are still on: rebuilding the tables would cascade deletes")
    violations_before = _foreign_key_violations()
    # pysqlite opens a transaction only before a data change and runs DDL outside one otherwise, which
    # would leave a half-copied table behind on failure. SQLite's DDL is transactional: a no-op UPDATE
    # first makes the whole rebuild one transaction.
    op.execute("UPDATE alembic_version SET version_num = version_num")
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass  # no change but the table's options: recreate copies it as it is
    if _foreign_key_violations() - violations_before:
        raise RuntimeError("rebuilding the tables broke foreign keys; the transaction is rolled back")
    # Commits the rebuild (alembic then stamps the revision in its own transaction; run again, this
    # revision would do the same work once more) and gives the connection its foreign keys back.
    with context.autocommit_block():
        op.execute("PRAGMA foreign_keys=ON")


def _foreign_key_violations() -> set[tuple[object, ...]]:
    return {tuple(row) for row in op.get_bind().exec_driver_sql("PRAGMA foreign_key_check")}


def _seed_sqlite_sequences() -> None:
    """Start each table's sequence at the highest id it holds or is named by.

    Copying the rows already recorded their highest id; ids deleted above it before this revision are
    not recorded anywhere (that was the defect), so the references without a foreign key are the only
    other trace of them."""
    bind = op.get_bind()
    for table in TABLES:
        named = [(table, "id"), *DANGLING_REFERENCES.get(table, ())]
        highest = [
            bind.execute(sa.select(sa.func.max(sa.column(column))).select_from(sa.table(source))).scalar()
            for source, column in named
        ]
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :name"), {"name": table})
        ids = [value for value in highest if value is not None]
        if ids:
            seed = {"name": table, "seq": max(ids)}
            bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)"), seed)
