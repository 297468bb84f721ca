"""Storing events: each once per device, type, time and subject, whoever finds it first."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tracker_jobs.core.db import dialect_name
from tracker_jobs.events.models import Event

_EVENTS: sa.Table = Event.__table__  # type: ignore[attr-defined]
_OPTIONAL: dict[str, Any] = {
    "position_id": None,
    "geofence_id": None,
    "maintenance_id": None,
    "subject": 0,
    "latitude": None,
    "longitude": None,
    "attributes": {},
}


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Insert event rows (the Event table's columns), skipping any stored already: a batch or a sweep
    run again after a crash adds none. Returns how many this call stored."""
    if not rows:
        return 0
    # One executemany takes its columns from the first row: every row gets every optional column.
    rows = [{**_OPTIONAL, **row} for row in rows]
    dialect = postgresql if dialect_name(session) == "postgresql" else sqlite
    statement = dialect.insert(_EVENTS).on_conflict_do_nothing().returning(_EVENTS.c.id)
    return len((await session.execute(statement, rows)).all())
