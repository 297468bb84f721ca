"""Report requests with their status and timings, and the stored export of each format."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from tracker_jobs.core.db import JsonDict, UTCDateTime, utcnow


class Report(SQLModel, table=True):
    """`kind`: route, trips, stops, summary, events, detailed, fleet, daily; `status`: queued … complete/failed."""

    __tablename__ = "reports"
    # SQLite AUTOINCREMENT: a deleted row's id is never handed out again (to another user's row).
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    user_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True),
    )
    kind: str = Field(max_length=32)
    parameters: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
    status: str = Field(default="queued", max_length=16)
    formats: list[str] = Field(default_factory=list, sa_type=JsonDict)
    row_counts: dict[str, int] = Field(default_factory=dict, sa_type=JsonDict)
    summary: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
    error: str | None = Field(default=None, sa_type=sa.Text)
    task_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ReportFile(SQLModel, table=True):
    """One part of a stored export of a report (json, csv, xlsx); a file over 4 MiB takes several rows."""

    __tablename__ = "report_files"

    report_id: int = Field(sa_column=sa.Column(sa.ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True))
    format: str = Field(sa_column=sa.Column(sa.String(8), primary_key=True))
    part: int = Field(default=0, sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    content_type: str = Field(max_length=128)
    content: bytes = Field(sa_type=sa.LargeBinary)
    size: int  # of this part
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
