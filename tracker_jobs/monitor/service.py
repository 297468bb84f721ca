"""What the task API does: read and list job records, cancel, retry and run jobs, report queues,
workers and overall status, and remove old records."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from tracker_jobs.core.db import iso, transaction, utcnow
from tracker_jobs.core.errors import Conflict
from tracker_jobs.core.principal import Principal
from tracker_jobs.jobs.base import JobSpec, enqueue, queue_key
from tracker_jobs.jobs.heartbeat import live_workers
from tracker_jobs.jobs.models import JobRecord, job_stat_minutes
from tracker_jobs.jobs.progress import read_progress
from tracker_jobs.jobs.records import (
    STATES,
    TERMINAL_STATES,
    JobRun,
    RecordBatch,
    announce_changes,
    minute_of,
    write_now,
)
from tracker_jobs.jobs.refs import JOBS, QUEUES
from tracker_jobs.monitor.arguments import check_arguments, job_parameters
from tracker_jobs.monitor.backlog import QueueBacklog, queue_backlogs
from tracker_jobs.monitor.stats import job_totals, unfinished_counts

# arq's own ids are uuid hex; cron ticks and partition drains use names with ':' and '-'.
TASK_ID = re.compile(r"[A-Za-z0-9:._-]{1,64}")
RETRYABLE_STATES = ("failed", "cancelled")
RETRY_CHUNK = 500
RETENTION_BATCH = 5_000
RUNNING_SHOWN = 100
# Removes a waiting job from its queue, or asks arq to abort it when a worker is running it.
_CANCEL_SCRIPT = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
  return 'running'
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  return 'removed'
end
return 'absent'
"""


class TaskConflict(Conflict):
    """The task is not in a state that allows what was asked."""


@dataclass
class TaskFilters:
    states: list[str] = field(default_factory=list)
    name: str | None = None
    queue: str | None = None
    start: datetime | None = None  # enqueued at or after
    end: datetime | None = None  # enqueued at or before
    search: str | None = None  # text the arguments hold, as JSON (`"device_id": 7`, `trips`)

    def apply(self, query: SelectOfScalar[JobRecord]) -> SelectOfScalar[JobRecord]:
        if self.states:
            query = query.where(col(JobRecord.state).in_(self.states))
        if self.name is not None:
            query = query.where(col(JobRecord.name) == self.name)
        if self.queue is not None:
            query = query.where(col(JobRecord.queue) == self.queue)
        if self.start is not None:
            query = query.where(col(JobRecord.enqueued_at) >= self.start)
        if self.end is not None:
            query = query.where(col(JobRecord.enqueued_at) <= self.end)
        if self.search is not None:
            # A bound parameter with LIKE's wildcards escaped: the text is matched as it is written.
            pattern = "%" + self.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(sa.cast(col(JobRecord.args), sa.Text).like(pattern, escape="\\"))
        return query


def visible_tasks(principal: Principal) -> SelectOfScalar[JobRecord]:
    """Every record for an admin; a user's own (the jobs they started) for a user."""
    query = select(JobRecord)
    return query if principal.is_admin else query.where(col(JobRecord.user_id) == principal.user_id)


def is_task_id(text: str) -> bool:
    return TASK_ID.fullmatch(text) is not None


async def get_task(session: AsyncSession, principal: Principal, task_id: str) -> JobRecord | None:
    if not is_task_id(task_id):
        return None
    found: JobRecord | None = (
        await session.execute(visible_tasks(principal).where(col(JobRecord.id) == task_id))
    ).scalar_one_or_none()
    return found


async def find_task(sessions: async_sessionmaker[AsyncSession], principal: Principal, task_id: str) -> JobRecord | None:
    async with sessions() as session:
        return await get_task(session, principal, task_id)


async def list_tasks(
    session: AsyncSession, principal: Principal, filters: TaskFilters, limit: int, offset: int
) -> list[JobRecord]:
    query = filters.apply(visible_tasks(principal))
    query = query.order_by(col(JobRecord.enqueued_at).desc(), col(JobRecord.id)).limit(limit).offset(offset)
    return list((await session.execute(query)).scalars())


def task_to_api(record: JobRecord, live_progress: dict[str, Any] | None = None) -> dict[str, Any]:
    progress = {"percent": record.progress, "message": record.progress_message}
    if live_progress is not None and record.state == "in_progress":
        progress = {"percent": live_progress["percent"], "message": live_progress["message"]}
    duration = (
        (record.finished_at - record.started_at).total_seconds() if record.finished_at and record.started_at else None
    )
    return {
        "id": record.id,
        "name": record.name,
        "queue": record.queue,
        "args": record.args,
        "state": record.state,
        "userId": record.user_id,
        "enqueuedAt": iso(record.enqueued_at),
        "startedAt": iso(record.started_at),
        "finishedAt": iso(record.finished_at),
        "durationS": duration,
        "tries": record.tries,
        "worker": record.worker,
        "error": None
        if record.error_type is None
        else {
            "type": record.error_type,
            "message": record.error_message,
            "traceback": record.traceback,
        },
        "result": record.result,
        "progress": progress,
        "retriedAs": record.retried_as,
    }


async def task_with_progress(redis: Redis, record: JobRecord) -> dict[str, Any]:
    """A record as the API shows it; a running job's progress comes fresh from Redis."""
    live = await read_progress(redis, record.id) if record.state == "in_progress" else None
    return task_to_api(record, live)


async def cancel_task(
    redis: Redis, sessions: async_sessionmaker[AsyncSession], principal: Principal, task_id: str
) -> JobRecord | None:
    """Remove a waiting job from its queue or abort a running one; either way its record says cancelled."""
    record = await find_task(sessions, principal, task_id)
    if record is None:
        return None
    if record.state in TERMINAL_STATES:
        raise TaskConflict(f"task {task_id} is already {record.state}")
    keys = [queue_key(record.queue), job_key_prefix + task_id, in_progress_key_prefix + task_id, abort_jobs_ss]
    outcome = await redis.eval(_CANCEL_SCRIPT, len(keys), *keys, task_id, str(int(time.time() * 1000)))  # type: ignore[misc]
    run = JobRun.from_record(record)
    run.state = "cancelled"
    run.finished_at = now = utcnow()
    run.error_type = "Cancelled"
    running = " while it ran" if outcome == b"running" else ""
    run.error_message = f"cancelled by user {principal.user_id}{running}"
    batch = RecordBatch()
    batch.put(run)
    batch.count((minute_of(now), run.name, run.queue), "cancelled", None)
    await write_now(sessions, batch)
    await announce_changes(redis, batch.runs.values())
    return await find_task(sessions, principal, task_id)


async def retry_task(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], principal: Principal, task_id: str
) -> str | None:
    """Enqueue a failed or cancelled job again with the same arguments; the new job's id (None: unknown id)."""
    record = await find_task(sessions, principal, task_id)
    if record is None:
        return None
    if record.state not in RETRYABLE_STATES:
        raise TaskConflict(f"task {task_id} is {record.state}; only failed or cancelled tasks are retried")
    if record.name not in JOBS:
        raise TaskConflict(f"task {task_id} ran {record.name!r}, which this version no longer has")
    retried = await _retry(redis, sessions, [record])
    if not retried:
        raise TaskConflict(f"task {task_id} was already retried as {record.retried_as or 'another task'}")
    return retried[0]


async def retry_failed(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], principal: Principal, filters: TaskFilters, limit: int
) -> list[str]:
    """Retry every failed, not yet retried job that matches (at most `limit`); the new jobs' ids."""
    filters = replace(filters, states=["failed"])
    new_ids: list[str] = []
    while len(new_ids) < limit:
        query = filters.apply(visible_tasks(principal)).where(
            col(JobRecord.retried_as).is_(None), col(JobRecord.name).in_(list(JOBS))
        )
        query = query.order_by(col(JobRecord.enqueued_at)).limit(min(RETRY_CHUNK, limit - len(new_ids)))
        async with sessions() as session:
            records = list((await session.execute(query)).scalars())
        if not records:
            break
        new_ids += await _retry(redis, sessions, records)
    return new_ids


async def _retry(redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], records: list[JobRecord]) -> list[str]:
    # Claim first (retried_as set only where still empty), so two operators never retry one job twice.
    claimed: list[tuple[JobRecord, str]] = []
    async with transaction(sessions) as session:
        for record in records:
            new_id = uuid.uuid4().hex
            update = sa.update(JobRecord).where(col(JobRecord.id) == record.id, col(JobRecord.retried_as).is_(None))
            if (await session.execute(update.values(retried_as=new_id))).rowcount:  # type: ignore[attr-defined]
                claimed.append((record, new_id))
    enqueued: list[str] = []
    try:
        for record, new_id in claimed:
            await enqueue(redis, JOBS[record.name], job_id=new_id, user_id=record.user_id, **record.args)
            enqueued.append(new_id)
    finally:
        unsent = [(record.id, new_id) for record, new_id in claimed if new_id not in enqueued]
        if unsent:
            async with transaction(sessions) as session:
                for record_id, new_id in unsent:
                    await session.execute(
                        sa.update(JobRecord)
                        .where(col(JobRecord.id) == record_id, col(JobRecord.retried_as) == new_id)
                        .values(retried_as=None)
                    )
    return enqueued


def runnable_jobs(specs: Mapping[str, JobSpec]) -> list[dict[str, Any]]:
    """Of these jobs, the ones an admin may run by hand, with the arguments each takes."""
    return [
        {
            "name": spec.name,
            "queue": spec.queue,
            "parameters": [parameter.as_api() for parameter in job_parameters(spec)],
        }
        for spec in sorted(specs.values(), key=lambda spec: spec.name)
        if spec.ref.by_hand
    ]


async def run_job(redis: ArqRedis, principal: Principal, spec: JobSpec, arguments: dict[str, Any]) -> str:
    """Enqueue a job an admin runs by hand; FieldError names an argument that does not fit."""
    checked = check_arguments(spec, arguments)
    job = await enqueue(redis, spec.ref, user_id=principal.user_id, **checked)
    assert job is not None  # a fresh id is never taken
    return job.job_id


def worker_to_api(worker: dict[str, Any], running: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "id": f"{worker['host']}:{worker['pid']}",
        "host": worker["host"],
        "pid": worker["pid"],
        "state": worker["state"],
        "queues": worker["queues"],
        "concurrency": worker["concurrency"],
        "running": running,
        "done": worker["done"],
        "failed": worker["failed"],
        "started": datetime.fromtimestamp(worker["started"], UTC).isoformat(),
        "lastHeartbeat": datetime.fromtimestamp(worker["lastSeen"], UTC).isoformat(),
    }


async def workers(redis: Redis, session: AsyncSession) -> list[dict[str, Any]]:
    """Worker processes from their heartbeats; the jobs each runs from the records (fresher than a beat)."""
    found = await live_workers(redis)
    running: dict[str, list[dict[str, str]]] = {}
    query = select(JobRecord.id, JobRecord.name, JobRecord.worker).where(col(JobRecord.state) == "in_progress")
    for job_id, name, worker in (await session.execute(query.order_by(col(JobRecord.started_at)))).all():
        running.setdefault(worker or "", []).append({"id": job_id, "name": name})
    ordered = sorted(found, key=lambda worker: (worker["host"], worker["pid"]))
    return [worker_to_api(worker, running.get(f"{worker['host']}:{worker['pid']}", [])) for worker in ordered]


def serving_workers(queue: str, found: list[dict[str, Any]]) -> int:
    return sum(1 for worker in found if worker["state"] == "live" and queue in worker["queues"])


async def queues(redis: Redis) -> list[dict[str, Any]]:
    found = await live_workers(redis)
    return [
        {**backlog.as_api(), "workers": serving_workers(backlog.name, found)} for backlog in await queue_backlogs(redis)
    ]


async def task_status(redis: Redis, session: AsyncSession) -> dict[str, Any]:
    """Counts per queue and state (finished ones from the rollups), workers, and the jobs running now."""
    counts = {queue: dict.fromkeys(STATES, 0) for queue in QUEUES}
    for rollup in await job_totals(session):
        for state in TERMINAL_STATES:
            counts.setdefault(rollup.queue, dict.fromkeys(STATES, 0))[state] += rollup.counts[state]
    for (_, queue), by_state in (await unfinished_counts(session)).items():
        for state, number in by_state.items():
            counts.setdefault(queue, dict.fromkeys(STATES, 0))[state] += number
    running_query = (
        select(JobRecord)
        .where(col(JobRecord.state) == "in_progress")
        .order_by(col(JobRecord.started_at))
        .limit(RUNNING_SHOWN)
    )
    running = list((await session.execute(running_query)).scalars())
    found = await live_workers(redis)
    return {
        "queues": counts,
        "workers": {state: sum(1 for worker in found if worker["state"] == state) for state in ("live", "lost")},
        "running": [task_to_api(record) for record in running],
    }


def queue_alerts(backlogs: list[QueueBacklog], found: list[dict[str, Any]], age_limit_s: int) -> list[str]:
    """Why /health is degraded: a queue with jobs and no live worker, or a backlog older than the limit."""
    alerts = []
    for backlog in backlogs:
        if backlog.waiting + backlog.deferred + backlog.running and not serving_workers(backlog.name, found):
            alerts.append(f"{backlog.name}: jobs waiting and no live worker serves the queue")
        if backlog.oldest_waiting_age_s is not None and backlog.oldest_waiting_age_s > age_limit_s:
            alerts.append(f"{backlog.name}: the oldest waiting job is {backlog.oldest_waiting_age_s:.0f} s old")
    return alerts


async def delete_old_records(
    sessions: async_sessionmaker[AsyncSession], retention_days: int, *, now: datetime | None = None
) -> int:
    """Remove finished records enqueued before the retention period, a batch per transaction, and old rollups."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    removed = 0
    while True:
        old = (
            select(JobRecord.id)
            .where(col(JobRecord.enqueued_at) < cutoff, col(JobRecord.state).in_(TERMINAL_STATES))
            .limit(RETENTION_BATCH)
        )
        async with transaction(sessions) as session:
            result = await session.execute(sa.delete(JobRecord).where(col(JobRecord.id).in_(old.scalar_subquery())))
        removed += int(result.rowcount)  # type: ignore[attr-defined]
        if result.rowcount < RETENTION_BATCH:  # type: ignore[attr-defined]
            break
    async with transaction(sessions) as session:
        await session.execute(sa.delete(job_stat_minutes).where(job_stat_minutes.c.minute < cutoff))
    return removed
