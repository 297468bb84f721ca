"""Stored positions. Speed in knots, distances in metres, times in UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from tracker_jobs.core.db import BigId, JsonDict, UTCDateTime


class Position(SQLModel, table=True):
    __tablename__ = "positions"
    # (device_id, fix_time) is unique so a re-run batch stores nothing twice, and it is the index
    # every per-device time-range query (API, reports, cleanup) walks.
    # AUTOINCREMENT on SQLite: ids are never reused, so a deleted position's id (still named by
    # devices.position_id or events.position_id, which have no foreign key) never means another row.
    __table_args__ = (
        sa.UniqueConstraint("device_id", "fix_time", name="uq_positions_device_id_fix_time"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    device_id: int = Field(sa_column=sa.Column(sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False))
    protocol: str = Field(default="osmand", max_length=32)
    fix_time: datetime = Field(sa_type=UTCDateTime)
    server_time: datetime = Field(sa_type=UTCDateTime)
    latitude: float
    longitude: float
    altitude: float = 0.0
    speed: float = 0.0  # knots
    course: float = 0.0
    accuracy: float = 0.0
    valid: bool = True
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
