"""Queued commands (one row per command sent to one device, whatever became of it) and saved commands
(a type and attributes a user reuses)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from tracker_jobs.core.db import BigId, JsonDict, UTCDateTime, utcnow


class State(StrEnum):
    QUEUED = "queued"  # waiting for the device's next report, or for its gateway to take it
    SENT = "sent"  # in a reply to the device, or accepted by its gateway
    ANSWERED = "answered"  # the device's result came back
    EXPIRED = "expired"  # not sent, or not answered, before expires_at
    CANCELLED = "cancelled"  # taken back before it was sent
    FAILED = "failed"  # the gateway refused it for good


OPEN_STATES = (State.QUEUED, State.SENT)


class Command(SQLModel, table=True):
    __tablename__ = "commands"
    __table_args__ = (
        sa.Index("ix_commands_device_id_id", "device_id", "id"),
        sa.Index("ix_commands_state_expires_at", "state", "expires_at"),
        # SQLite AUTOINCREMENT: a command id a gateway or a device was given never names another command.
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    device_id: int = Field(sa_column=sa.Column(sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False))
    user_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    )
    type: str = Field(max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
    description: str = Field(default="", max_length=512)
    transport: str = Field(max_length=16)
    text: str | None = Field(default=None, max_length=4096)  # what the OsmAnd reply carries
    state: str = Field(default=State.QUEUED, max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # expired, cancelled or failed
    result: str | None = Field(default=None, max_length=4096)
    # The device's report that answered it (a stream entry id): a result recorded again after a crash
    # answers nothing a second time.
    result_entry: str | None = Field(default=None, max_length=32, sa_column_kwargs={"unique": True})
    attempts: int = 0  # gateway tries
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    error: str | None = Field(default=None, max_length=512)


class SavedCommand(SQLModel, table=True):
    """Traccar's saved command: a type and attributes to send again; its owner's (any admin sees all)."""

    __tablename__ = "saved_commands"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    description: str = Field(default="", max_length=512)
    type: str = Field(max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
