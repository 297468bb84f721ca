"""Storing events: each once per device, type, time and subject, whoever finds it first, with the
deliveries it owes (events/outbox.py) in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tracker_jobs.core.db import dialect_name
from tracker_jobs.events.models import Event
from tracker_jobs.events.outbox import plan_deliveries

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


@dataclass
class Recorded:
    events: list[int] = field(default_factory=list)  # stored by this call
    deliveries: list[int] = field(default_factory=list)  # owed by them: enqueue once this commits


async def record_events(
    session: AsyncSession, rows: list[dict[str, Any]], now: datetime, notify_max_age_s: float
) -> Recorded:
    """Store the events and write the deliveries each owes."""
    events = await insert_events(session, rows)
    return Recorded(events, await plan_deliveries(session, events, now, notify_max_age_s))


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert event rows (the Event table's columns), skipping any stored already: a batch or a sweep
    run again after a crash adds none. Returns the ids this call stored."""
    if not rows:
        return []
    # One executemany takes its columns from the first row: every row gets every optional column.
    rows = [{**_OPTIONAL, **row} for row in rows]
    dialect = postgresql if dialect_name(session) == "postgresql" else sqlite
    statement = dialect.insert(_EVENTS).on_conflict_do_nothing().returning(_EVENTS.c.id)
    return [row[0] for row in (await session.execute(statement, rows)).all()]
