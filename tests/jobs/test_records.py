"""Job records written out of order by several processes, the rollups, statistics and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.factories import Users
from tests.support.probes import run_cleanup_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import create_engine, session_factory, utcnow
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.models import JobRecord, job_stat_minutes, job_stat_totals
from tracker_jobs.jobs.records import JobRecords, JobRun, RecordBatch, minute_of, write_now
from tracker_jobs.jobs.refs import CLEANUP, JOBS
from tracker_jobs.monitor import service
from tracker_jobs.monitor.stats import Rollup, job_history, job_stats


def run_of(state: str, *, tries: int = 0, user_id: int | None = None, job_id: str = "job-1") -> JobRun:
    return JobRun(job_id, "ping", CLEANUP, {"seconds": 1}, utcnow(), user_id=user_id, state=state, tries=tries)


async def write(sessions: async_sessionmaker[AsyncSession], *runs: JobRun) -> None:
    batch = RecordBatch()
    for run in runs:
        batch.put(run)
    await write_now(sessions, batch)


async def record(sessions: async_sessionmaker[AsyncSession], job_id: str = "job-1") -> JobRecord:
    async with sessions() as session:
        found = await session.get(JobRecord, job_id)
    assert found is not None
    return found


async def test_writes_arriving_out_of_order_never_move_a_job_backwards(
    sessions: async_sessionmaker[AsyncSession], users: Users
) -> None:
    await write(sessions, run_of("in_progress", tries=1))  # the worker's write won the race
    await write(sessions, run_of("queued", user_id=users.user))  # the enqueuer's, later
    found = await record(sessions)
    assert (found.state, found.tries, found.user_id) == ("in_progress", 1, users.user)

    cancelled = run_of("cancelled", tries=1)
    await write(sessions, cancelled)
    await write(sessions, run_of("failed", tries=1), run_of("in_progress", tries=2, job_id="job-2"))
    assert (await record(sessions)).state == "cancelled"  # a cancel sticks
    assert (await record(sessions, "job-2")).state == "in_progress"
    await write(sessions, run_of("complete", tries=2, job_id="job-2"))
    assert (await record(sessions, "job-2")).state == "complete"


async def test_a_deleted_user_does_not_fail_the_batch(sessions: async_sessionmaker[AsyncSession]) -> None:
    await write(sessions, run_of("queued", user_id=999), run_of("queued", job_id="job-2"))
    assert (await record(sessions)).user_id is None
    assert (await record(sessions, "job-2")).state == "queued"


async def test_rollups_add_up_and_the_window_limits_the_stats(sessions: async_sessionmaker[AsyncSession]) -> None:
    now = utcnow()
    batch = RecordBatch()
    for seconds in (0.002, 0.004, 0.2, 3.0):
        batch.count((minute_of(now), "ping", CLEANUP), "complete", seconds)
    batch.count((minute_of(now), "ping", CLEANUP), "failed", 0.004)
    batch.count((minute_of(now - timedelta(hours=3)), "ping", CLEANUP), "complete", 100.0)
    await write_now(sessions, batch)
    again = RecordBatch()
    again.count((minute_of(now), "ping", CLEANUP), "cancelled", None)
    await write_now(sessions, again)

    async with sessions() as session:
        hour = {entry["name"]: entry for entry in await job_stats(session, "1h")}["ping"]
        day = {entry["name"]: entry for entry in await job_stats(session, "24h")}["ping"]
        totals = (await session.execute(sa.select(job_stat_totals.c.complete, job_stat_totals.c.cancelled))).one()
        minutes = (await session.execute(sa.select(sa.func.count()).select_from(job_stat_minutes))).scalar_one()
    assert hour["counts"] == {
        "complete": 4,
        "failed": 1,
        "cancelled": 1,
        "retried": 0,
        "queued": 0,
        "in_progress": 0,
        "retrying": 0,
    }
    assert hour["failureRate"] == 0.2
    assert hour["durationS"]["max"] == 3.0
    assert 0.0025 < hour["durationS"]["p50"] <= 0.005
    assert 1.0 < hour["durationS"]["p95"] <= 3.0
    assert hour["throughputPerMin"] == round(5 / 60, 3)
    assert day["counts"]["complete"] == 5
    assert day["durationS"]["max"] == 100.0
    assert tuple(totals) == (5, 1)
    assert minutes == 2


def test_percentiles_interpolate_inside_the_buckets() -> None:
    empty = Rollup("ping", CLEANUP, {}, 0.0, 0.0, [0] * 21)
    assert empty.percentile(0.5) is None
    ten_in_one_bucket = Rollup("ping", CLEANUP, {}, 7.0, 0.9, [0] * 8 + [10] + [0] * 12)  # (0.25 s, 0.5 s]
    assert ten_in_one_bucket.percentile(0.5) == pytest.approx(0.375)
    assert ten_in_one_bucket.percentile(1.0) == 0.5
    slow = Rollup("ping", CLEANUP, {}, 9000.0, 9000.0, [0] * 20 + [1])  # above the last bound: up to the max
    assert slow.percentile(0.5) == pytest.approx(6300.0)


async def test_cleanup_removes_old_finished_records_in_batches(
    settings: Settings, redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "RETENTION_BATCH", 3)  # 7 old records: three batches
    old = utcnow() - timedelta(days=settings.job_record_retention_days + 1)
    runs = [JobRun(f"old-{index}", "ping", CLEANUP, {}, old, state="complete", tries=1) for index in range(7)]
    runs.append(JobRun("old-but-waiting", "ping", CLEANUP, {}, old))
    runs.append(JobRun("recent", "ping", CLEANUP, {}, utcnow(), state="failed", tries=1))
    await write(sessions, *runs)
    job = await enqueue(redis, JOBS["cleanup_job_records"])
    assert job is not None
    await run_cleanup_burst(settings)
    async with sessions() as session:
        left = set((await session.execute(sa.select(JobRecord.id))).scalars())
        cleanup = await session.get(JobRecord, job.job_id)
    cron_ticks = {task_id for task_id in left if ":" in task_id}  # the cleanup cron may fire meanwhile
    assert left - cron_ticks == {"old-but-waiting", "recent", job.job_id}
    assert cleanup is not None
    assert cleanup.result == {"removed": 7}


async def test_records_wait_out_a_database_outage(sessions: async_sessionmaker[AsyncSession]) -> None:
    records = JobRecords()
    records.pending.put(run_of("queued"))
    unreachable = create_engine("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises((OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        await records.flush(None, session_factory(unreachable))
    await unreachable.dispose()
    assert list(records.pending.runs) == ["job-1"]  # kept for the next try
    assert await records.flush(None, sessions) == 1
    assert (await record(sessions)).state == "queued"


async def test_the_history_puts_each_minute_in_its_step(sessions: async_sessionmaker[AsyncSession]) -> None:
    now = datetime(2026, 3, 1, 12, 30, 20, tzinfo=UTC)
    batch = RecordBatch()
    for ago, outcome in [(0, "complete"), (0, "failed"), (1, "complete"), (59, "complete"), (60, "complete")]:
        batch.count((minute_of(now - timedelta(minutes=ago)), "ping", CLEANUP), outcome, 0.1)
    batch.count((minute_of(now - timedelta(minutes=1)), "other", CLEANUP), "complete", 0.1)
    batch.count((minute_of(now - timedelta(hours=23, minutes=59)), "ping", CLEANUP), "failed", 0.1)
    batch.count((minute_of(now - timedelta(hours=25)), "ping", CLEANUP), "failed", 0.1)  # outside both windows
    await write_now(sessions, batch)

    async with sessions() as session:
        hour = await job_history(session, "1h", now)
        day = await job_history(session, "24h", now)
    assert (hour["stepS"], len(hour["points"])) == (60, 60)
    assert hour["points"][-1] == {"at": "2026-03-01T12:30:00+00:00", "complete": 1, "failed": 1}
    assert hour["points"][-2]["complete"] == 2  # every job together
    assert hour["points"][0] == {"at": "2026-03-01T11:31:00+00:00", "complete": 1, "failed": 0}  # 59 minutes ago
    assert sum(p["complete"] for p in hour["points"]) == 4  # 60 minutes ago is before the window
    assert (day["stepS"], len(day["points"])) == (1800, 48)
    assert day["points"][-1] == {"at": "2026-03-01T12:30:00+00:00", "complete": 1, "failed": 1}
    assert day["points"][0] == {"at": "2026-02-28T13:00:00+00:00", "complete": 0, "failed": 0}
    assert day["points"][-3]["complete"] == 2  # 11:30 and 11:31 in the step from 11:30
    assert day["points"][-2]["complete"] == 2  # 12:29, both jobs
    assert sum(p["failed"] for p in day["points"]) == 1  # 12:31 the day before: before the first step (13:00)
