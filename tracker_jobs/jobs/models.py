"""The persistent record of every job, so history survives restarts of workers, the app and Redis,
and the per-minute rollups that answer /api/tasks/stats and /metrics without scanning the records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from tracker_jobs.core.db import JsonDict, UTCDateTime

# Upper bounds (seconds) of the job duration histogram buckets; one more bucket holds longer runs.
DURATION_BOUNDS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
BUCKET_COLUMNS = tuple(f"bucket_{index:02d}" for index in range(len(DURATION_BOUNDS_S) + 1))
# Outcomes a finished try is counted under in the rollups.
OUTCOME_COLUMNS = ("complete", "failed", "cancelled", "retried")


class JobRecord(SQLModel, table=True):
    """`state`: queued, in_progress, complete, failed, retrying, cancelled.

    `revision` orders the writes of one job that reach the table from different processes:
    a write only replaces the mutable fields when its revision is not older (see jobs/records.py).
    """

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
    revision: int = Field(default=0, sa_column_kwargs={"server_default": sa.text("0")})
    retried_as: str | None = Field(default=None, max_length=64)  # the job id a retry by hand enqueued


def _rollup_columns(count_type: type[sa.types.TypeEngine[int]]) -> list[sa.Column[Any]]:
    return [
        *(sa.Column(outcome, count_type, nullable=False) for outcome in OUTCOME_COLUMNS),
        sa.Column("duration_sum_s", sa.Float, nullable=False),
        sa.Column("duration_max_s", sa.Float, nullable=False),
        *(sa.Column(bucket, count_type, nullable=False) for bucket in BUCKET_COLUMNS),
    ]


# Finished tries per minute (of finishing), job name and queue; bucket_NN counts durations up to
# DURATION_BOUNDS_S[NN] (and above the previous bound). The minute leads the key: stats read a time range.
job_stat_minutes = sa.Table(
    "job_stat_minutes",
    SQLModel.metadata,
    sa.Column("minute", UTCDateTime, primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("queue", sa.String(32), primary_key=True),
    *_rollup_columns(sa.Integer),
)

# The same counts since the beginning, per job name and queue: /metrics exports them as counters.
job_stat_totals = sa.Table(
    "job_stat_totals",
    SQLModel.metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("queue", sa.String(32), primary_key=True),
    *_rollup_columns(sa.BigInteger),
)
