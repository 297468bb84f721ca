"""Storing events: each once per device, type, time and subject, whoever finds it first."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tracker_jobs.core.db import dialect_name
from tracker_jobs.events.models import Event

_EVENTS: sa.Table = Event.__table__  # type: ignore[attr-defined]


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Insert event rows (the Event table's columns), skipping any stored already: a batch or a sweep
    run again after a crash adds none. Returns how many this call stored."""
    if not rows:
        return 0
    dialect = postgresql if dialect_name(session) == "postgresql" else sqlite
    statement = dialect.insert(_EVENTS).on_conflict_do_nothing().returning(_EVENTS.c.id)
    return len((await session.execute(statement, rows)).all())
