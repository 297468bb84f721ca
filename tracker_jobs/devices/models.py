"""Devices, who may see them, their maintenance items and the commands queued for them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from tracker_jobs.core.db import BigId, JsonDict, UTCDateTime, utcnow


class DeviceStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


class Device(SQLModel, table=True):
    __tablename__ = "devices"
    # SQLite AUTOINCREMENT: a deleted row's id is never handed out again (to another user's row).
    # PostgreSQL: half of each page kept free for the new versions of rows every batch rewrites (0011).
    __table_args__ = {"sqlite_autoincrement": True, "postgresql_with": {"fillfactor": 50}}

    id: int | None = Field(default=None, primary_key=True)
    unique_id: str = Field(max_length=128, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=128)
    status: str = Field(default=DeviceStatus.OFFLINE, max_length=16)
    disabled: bool = False
    last_update: datetime | None = Field(default=None, sa_type=UTCDateTime)
    position_id: int | None = Field(default=None, sa_type=BigId)  # latest stored position (no FK: see cleanup)
    # Its fix time: with the id, it finds the position in its day's partition alone (PostgreSQL), where
    # the id by itself would be looked up in every day's.
    position_time: datetime | None = Field(default=None, sa_type=UTCDateTime)
    speed_limit: float | None = None  # knots; None: no overspeed check
    total_distance: float = 0.0  # odometer, metres
    motion: bool = False
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Where trip detection stands (positions/motion_events.py MotionState), moved with the newest position.
    motion_state: dict[str, Any] | None = Field(default=None, sa_type=JsonDict)


class UserDevice(SQLModel, table=True):
    """Which user may see which device (admins see every device without a row here)."""

    __tablename__ = "user_devices"

    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    device_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class Maintenance(SQLModel, table=True):
    """A service interval: due when `type` (e.g. totalDistance, hours) passes start + n * period, for
    each device linked to it (DeviceMaintenance); `device_id` is the device it was created for, whose
    visibility decides who sees it."""

    __tablename__ = "maintenances"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    device_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    name: str = Field(max_length=128)
    type: str = Field(max_length=64)
    start: float = 0.0
    period: float
    last_notified: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)


class DeviceMaintenance(SQLModel, table=True):
    """A maintenance item applies to the device: the one it was created for, and any linked to it with
    /api/permissions {deviceId, maintenanceId} (Traccar's device-maintenance permission)."""

    __tablename__ = "device_maintenances"

    device_id: int = Field(sa_column=sa.Column(sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True))
    maintenance_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("maintenances.id", ondelete="CASCADE"), primary_key=True, index=True)
    )
