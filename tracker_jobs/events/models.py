"""Events detected from positions, and the geofences they refer to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from tracker_jobs.core.db import BigId, JsonDict, UTCDateTime


class Geofence(SQLModel, table=True):
    """An area as WKT, as Traccar keeps it: POLYGON, LINESTRING, or CIRCLE (lat lon, radius_m)."""

    __tablename__ = "geofences"
    # SQLite AUTOINCREMENT: a deleted row's id is never handed out again (to another user's row).
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    description: str = Field(default="", max_length=512)
    area: str = Field(sa_type=sa.Text)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
    # Grows with every change of the area or attributes: workers keep parsed shapes until it moves.
    revision: int = Field(default=1, sa_column_kwargs={"server_default": sa.text("1")})


class DeviceGeofence(SQLModel, table=True):
    __tablename__ = "device_geofences"

    device_id: int = Field(sa_column=sa.Column(sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True))
    geofence_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("geofences.id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class UserGeofence(SQLModel, table=True):
    """A user may see and use the geofence (its creator, or one an admin shared it with); an admin
    sees every geofence."""

    __tablename__ = "user_geofences"

    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    geofence_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("geofences.id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class Event(SQLModel, table=True):
    """`type` uses Traccar's names: geofenceEnter, geofenceExit, deviceOverspeed, deviceOffline, maintenance.

    Stored once per device, type, time and `subject` (the geofence's or maintenance item's id, else
    0): a batch run again after a crash adds no second event. It keeps its own coordinates, so it
    stays readable once retention removes its position; nothing refers to it by a foreign key.
    """

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_device_id_event_time", "device_id", "event_time"),
        sa.Index(
            "uq_events_device_id_type_event_time_subject", "device_id", "type", "event_time", "subject", unique=True
        ),
        # SQLite AUTOINCREMENT: an id is never reused, so deliveries.event_id (no foreign key) never
        # comes to name another device's event.
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    type: str = Field(max_length=64)
    device_id: int = Field(sa_column=sa.Column(sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False))
    event_time: datetime = Field(sa_type=UTCDateTime, index=True)
    position_id: int | None = Field(default=None, sa_type=BigId)
    geofence_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.ForeignKey("geofences.id", ondelete="SET NULL"), nullable=True)
    )
    maintenance_id: int | None = None
    subject: int = Field(default=0, sa_type=BigId, sa_column_kwargs={"server_default": sa.text("0")})
    latitude: float | None = None
    longitude: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)


class Notification(SQLModel, table=True):
    """Who hears of which events, and how (Traccar's model): `type` an event type (or dailySummary,
    systemAlert); `always` every device its users may see, otherwise the linked devices;
    `notificators` the channels, comma-separated (web, mail, webhook); attributes hold the filters
    (`alarms`, `geofenceIds`), the webhook's `webhookUrl` and `webhookSecret`, and `cooldown` (s).

    It lives beside the events because the position path writes its deliveries in the same
    transaction as the events themselves (the outbox, events/outbox.py)."""

    __tablename__ = "notifications"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    type: str = Field(max_length=64, index=True)
    description: str = Field(default="", max_length=512)
    always: bool = False
    notificators: str = Field(max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)


class UserNotification(SQLModel, table=True):
    """A user is told by the notification (its creator, or one an admin linked it to)."""

    __tablename__ = "user_notifications"

    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    notification_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class DeviceNotification(SQLModel, table=True):
    """A notification that is not `always` covers the devices linked to it."""

    __tablename__ = "device_notifications"

    device_id: int = Field(sa_column=sa.Column(sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True))
    notification_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class Delivery(SQLModel, table=True):
    """One message to one user by one channel: the outbox. Written with its event, sent by a job,
    tried again with backoff; `state` is pending, sent, failed (will be tried again) or dead.

    An event delivery names its event by id only (no foreign key: `events` may be partitioned and
    pruned by time); what a delivery without an event says (a daily summary, a system alert, a test)
    is in `content`. The unique key keeps a re-run fan-out from writing a delivery twice."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.Index("uq_deliveries_event", "event_id", "notification_id", "user_id", "channel", unique=True),
        sa.Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    notification_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.ForeignKey("notifications.id", ondelete="SET NULL"), nullable=True)
    )
    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    channel: str = Field(max_length=16)
    state: str = Field(default="pending", max_length=16)
    event_id: int | None = Field(default=None, sa_type=BigId)
    event_type: str = Field(max_length=64)
    device_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=True, index=True)
    )
    event_time: datetime = Field(sa_type=UTCDateTime)
    content: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    leased_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
