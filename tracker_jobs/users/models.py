"""Users, login sessions and long-lived API tokens; secrets are stored only as hashes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from tracker_jobs.core.db import JsonDict, UTCDateTime, utcnow
from tracker_jobs.core.principal import Role


class User(SQLModel, table=True):
    __tablename__ = "users"
    # SQLite AUTOINCREMENT: a deleted row's id is never handed out again (to another user's row).
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    email: str = Field(max_length=256, sa_column_kwargs={"unique": True})
    password_hash: str | None = Field(default=None, max_length=256)  # scrypt; None: token-only user
    role: str = Field(default=Role.USER, max_length=16)
    disabled: bool = False
    # Traccar's limitCommands: the user may send saved commands only.
    limit_commands: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # e.g. `timezone` (IANA): the user's notifications and daily summaries show local times.
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApiToken(SQLModel, table=True):
    """A long-lived bearer token; `token_hash` is SHA-256 of a random 256-bit secret."""

    __tablename__ = "api_tokens"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    name: str = Field(max_length=128)
    token_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class UserSession(SQLModel, table=True):
    """A login session made by POST /api/session; removed once `expires_at` has passed."""

    __tablename__ = "sessions"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    token_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
