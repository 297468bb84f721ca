"""One database write per batch: the positions, then each device's latest state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from tracker_jobs.db import UTCDateTime, insert_ignoring_duplicates
from tracker_jobs.positions.models import Position

_POSITIONS: sa.Table = Position.__table__  # type: ignore[attr-defined]

# Data arrived: the device is online and this is when it was last heard from.
_DEVICE_SEEN = sa.text(
    "UPDATE devices SET status = 'online', last_update = :server_time WHERE id = :device_id"
).bindparams(sa.bindparam("server_time", type_=UTCDateTime()))

# The latest position only moves forward: a late, older fix is stored but does not replace it.
_DEVICE_LATEST = sa.text(
    """
    UPDATE devices
    SET position_id = (SELECT id FROM positions WHERE device_id = :device_id AND fix_time = :fix_time)
    WHERE id = :device_id
      AND (position_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM positions AS current
                          WHERE current.id = devices.position_id AND current.fix_time >= :fix_time))
    """
).bindparams(sa.bindparam("fix_time", type_=UTCDateTime()))


def position_row(payload: bytes) -> dict[str, Any]:
    """A stream entry as a positions row (times arrive as epoch seconds)."""
    data: dict[str, Any] = orjson.loads(payload)
    data["fix_time"] = datetime.fromtimestamp(data["fix_time"], UTC)
    data["server_time"] = datetime.fromtimestamp(data["server_time"], UTC)
    return data


async def store_positions(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Insert the batch (a re-run stores nothing twice) and move each device's state; return rows written."""
    unique: dict[tuple[int, datetime], dict[str, Any]] = {}
    for row in rows:
        unique.setdefault((row["device_id"], row["fix_time"]), row)
    ordered = sorted(unique.values(), key=lambda row: (row["device_id"], row["fix_time"]))
    await insert_ignoring_duplicates(session, _POSITIONS, ordered)
    latest: dict[int, dict[str, Any]] = {}
    for row in ordered:  # sorted by fix time within a device, so the last one wins
        latest[row["device_id"]] = row
    seen = [{"device_id": device_id, "server_time": row["server_time"]} for device_id, row in latest.items()]
    newest = [{"device_id": device_id, "fix_time": row["fix_time"]} for device_id, row in latest.items()]
    if seen:
        await session.execute(_DEVICE_SEEN, seen)
        await session.execute(_DEVICE_LATEST, newest)
    return len(ordered)
