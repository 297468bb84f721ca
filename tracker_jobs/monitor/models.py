"""The persistent record of every job, so history survives restarts of workers, the app and Redis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from tracker_jobs.db import JsonDict, UTCDateTime


class JobRecord(SQLModel, table=True):
    """`state`: queued, in_progress, complete, failed, retrying, cancelled."""

    __tablename__ = "job_records"
    __table_args__ = (sa.Index("ix_job_records_name_finished_at", "name", "finished_at"),)

    id: str = Field(primary_key=True, max_length=64)  # the arq job id
    name: str = Field(max_length=128)
    queue: str = Field(max_length=32)
    args: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDict)
    state: str = Field(default="queued", max_length=16, index=True)
    user_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True),
    )
    enqueued_at: datetime = Field(sa_type=UTCDateTime, index=True)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    tries: int = 0
    worker: str | None = Field(default=None, max_length=128)
    error_type: str | None = Field(default=None, max_length=128)
    error_message: str | None = Field(default=None, sa_type=sa.Text)
    traceback: str | None = Field(default=None, sa_type=sa.Text)
    result: dict[str, Any] | None = Field(default=None, sa_type=JsonDict)
    progress: float = 0.0  # percent
    progress_message: str = Field(default="", max_length=256)
