"""Who is told about which events by which channel, and a record of every delivery."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from tracker_jobs.core.db import BigId, JsonDict, UTCDateTime, utcnow


class NotificationRule(SQLModel, table=True):
    """`event_type` as in Event.type; `channels` is a list of web, mail, webhook; attributes hold e.g. the URL."""

    __tablename__ = "notification_rules"
    # SQLite AUTOINCREMENT: a deleted row's id is never handed out again (to another user's row).
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    event_type: str = Field(max_length=64)
    all_devices: bool = True
    channels: list[str] = Field(default_factory=list, sa_type=JsonDict)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)


class SentNotification(SQLModel, table=True):
    __tablename__ = "sent_notifications"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    rule_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.ForeignKey("notification_rules.id", ondelete="SET NULL"), nullable=True),
    )
    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    event_id: int | None = Field(default=None, sa_type=BigId)
    channel: str = Field(max_length=16)
    status: str = Field(default="sent", max_length=16)
    error: str | None = Field(default=None, sa_type=sa.Text)
    sent_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
