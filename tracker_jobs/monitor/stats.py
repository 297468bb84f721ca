"""Job statistics from the rollups (never a scan of the records): counts by outcome, failure rate,
duration percentiles estimated from the histogram buckets, throughput."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, func, select

from tracker_jobs.core.db import utcnow
from tracker_jobs.jobs.models import (
    BUCKET_COLUMNS,
    DURATION_BOUNDS_S,
    OUTCOME_COLUMNS,
    JobRecord,
    job_stat_minutes,
    job_stat_totals,
)
from tracker_jobs.jobs.records import minute_of

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
UNFINISHED_STATES = ("queued", "in_progress", "retrying")


@dataclass
class Rollup:
    """Summed rollup rows of one job name on one queue."""

    name: str
    queue: str
    counts: dict[str, int]
    duration_sum_s: float
    duration_max_s: float
    buckets: list[int]

    @property
    def timed(self) -> int:
        return sum(self.buckets)

    def percentile(self, fraction: float) -> float | None:
        """The duration below which `fraction` of timed runs fall, interpolated inside its bucket."""
        if not self.timed:
            return None
        rank = fraction * self.timed
        below = 0
        for index, number in enumerate(self.buckets):
            if number and below + number >= rank:
                lower = DURATION_BOUNDS_S[index - 1] if index else 0.0
                upper = DURATION_BOUNDS_S[index] if index < len(DURATION_BOUNDS_S) else self.duration_max_s
                estimate = lower + (upper - lower) * (rank - below) / number
                return round(min(estimate, self.duration_max_s), 6)
            below += number
        return self.duration_max_s


async def summed_rollups(session: AsyncSession, table: sa.Table, since: datetime | None = None) -> list[Rollup]:
    """Per job name and queue: the rollup rows since `since` (every row of the table when None) added up."""
    sums = [func.coalesce(func.sum(table.c[name]), 0) for name in (*OUTCOME_COLUMNS, "duration_sum_s", *BUCKET_COLUMNS)]
    query = sa.select(table.c.name, table.c.queue, func.max(table.c.duration_max_s), *sums)
    if since is not None:
        query = query.where(table.c.minute >= since)
    rows = (await session.execute(query.group_by(table.c.name, table.c.queue))).all()
    outcomes = len(OUTCOME_COLUMNS)
    return [
        Rollup(
            name,
            queue,
            dict(zip(OUTCOME_COLUMNS, map(int, values[:outcomes]), strict=True)),
            float(values[outcomes]),
            float(longest or 0.0),
            [int(number) for number in values[outcomes + 1 :]],
        )
        for name, queue, longest, *values in rows
    ]


async def unfinished_counts(session: AsyncSession) -> dict[tuple[str, str], dict[str, int]]:
    """(name, queue) -> state -> number of records still queued, running or waiting for a retry."""
    query = (
        select(JobRecord.name, JobRecord.queue, JobRecord.state, func.count())
        .where(col(JobRecord.state).in_(UNFINISHED_STATES))
        .group_by(col(JobRecord.name), col(JobRecord.queue), col(JobRecord.state))
    )
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for name, queue, state, number in (await session.execute(query)).all():
        counts.setdefault((name, queue), dict.fromkeys(UNFINISHED_STATES, 0))[state] = number
    return counts


async def job_stats(session: AsyncSession, window: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """GET /api/tasks/stats: one entry per job name and queue seen in the window or unfinished now."""
    span = WINDOWS[window]
    since = minute_of((now or utcnow()) - span)
    rollups = {(rollup.name, rollup.queue): rollup for rollup in await summed_rollups(session, job_stat_minutes, since)}
    unfinished = await unfinished_counts(session)
    minutes = span.total_seconds() / 60
    entries = []
    for name, queue in sorted(rollups.keys() | unfinished.keys()):
        rollup = rollups.get((name, queue)) or Rollup(name, queue, dict.fromkeys(OUTCOME_COLUMNS, 0), 0.0, 0.0, [])
        ended = rollup.counts["complete"] + rollup.counts["failed"]
        entries.append(
            {
                "name": name,
                "queue": queue,
                "window": window,
                "counts": {**rollup.counts, **unfinished.get((name, queue), dict.fromkeys(UNFINISHED_STATES, 0))},
                "failureRate": round(rollup.counts["failed"] / ended, 4) if ended else None,
                "durationS": {
                    "p50": rollup.percentile(0.5),
                    "p95": rollup.percentile(0.95),
                    "max": rollup.duration_max_s if rollup.timed else None,
                    "mean": round(rollup.duration_sum_s / rollup.timed, 6) if rollup.timed else None,
                },
                "throughputPerMin": round(ended / minutes, 3),
            }
        )
    return entries


# The history's step per window: 60 points of a minute, or 48 of half an hour.
HISTORY_STEPS = {"1h": timedelta(minutes=1), "24h": timedelta(minutes=30)}


async def job_history(session: AsyncSession, window: str, now: datetime | None = None) -> dict[str, Any]:
    """GET /api/tasks/history: jobs completed and failed (every job together) per step over the window, oldest
    first, from the minute rollups; the last step is the one running now."""
    step = HISTORY_STEPS[window]
    points = int(WINDOWS[window] / step)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    last = epoch + ((now or utcnow()) - epoch) // step * step  # the start of the step running now
    first = last - (points - 1) * step
    table = job_stat_minutes
    query = (
        sa.select(table.c.minute, func.sum(table.c.complete), func.sum(table.c.failed))
        .where(table.c.minute >= first)
        .group_by(table.c.minute)
    )
    complete, failed = [0] * points, [0] * points
    for minute, done, broken in (await session.execute(query)).all():
        index = min(int((minute - first) / step), points - 1)
        complete[index] += int(done)
        failed[index] += int(broken)
    return {
        "window": window,
        "stepS": int(step.total_seconds()),
        "points": [
            {"at": (first + index * step).isoformat(), "complete": complete[index], "failed": failed[index]}
            for index in range(points)
        ],
    }


async def job_totals(session: AsyncSession) -> list[Rollup]:
    """Every finished try since the beginning, per job name and queue (/metrics counters)."""
    return await summed_rollups(session, job_stat_totals)
