"""Job records written behind the jobs: each process keeps the newest state of the jobs it touched in
memory, and a flusher task upserts them with the statistics rollups in one transaction every half second.

Processes without a flusher (scripts, tests, `arq` enqueuers) hand their records over through a Redis
list that every flusher drains. Each write carries a revision (the try and its phase), so rows that
reach the table out of order from different processes never move a job backwards, and a cancel sticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cache
from typing import Any

import orjson
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.core.db import dialect_name, transaction, utcnow
from tracker_jobs.core.serialization import serialize_job
from tracker_jobs.jobs.models import (
    BUCKET_COLUMNS,
    DURATION_BOUNDS_S,
    OUTCOME_COLUMNS,
    JobRecord,
    job_stat_minutes,
    job_stat_totals,
)
from tracker_jobs.users.models import User

FLUSH_INTERVAL_S = 0.5  # a record lags its job by at most this plus one write
HANDOVER_KEY = "tracker:job-records:handover"
HANDOVER_BATCH = 10_000
MAX_PENDING_RECORDS = 200_000  # unwritten records kept while the database is unreachable (~200 MB)
# The records each flush writes are announced here; the admin app's sockets pass them on (web/socket.py).
TASKS_CHANNEL = "tracker:tasks:changes"
MAX_ANNOUNCED = 500
CANCELLED_REVISION = 2**31 - 1  # a cancel outranks every later write of the job
TERMINAL_STATES = ("complete", "failed", "cancelled")
STATES = ("queued", "in_progress", "complete", "failed", "retrying", "cancelled")
MAX_RESULT_BYTES = 16_384
MAX_ERROR_CHARS = 2_000
MAX_TRACEBACK_CHARS = 8_000
# Fields a newer revision overwrites; identity fields (name, queue, args, enqueued_at) keep their first value.
MUTABLE_FIELDS = (
    "state",
    "started_at",
    "finished_at",
    "tries",
    "worker",
    "error_type",
    "error_message",
    "traceback",
    "result",
    "progress",
    "progress_message",
    "revision",
)
log = logging.getLogger(__name__)


@dataclass(slots=True)
class JobRun:
    """The newest known state of one job, as this process saw it."""

    id: str
    name: str
    queue: str
    args: dict[str, Any]
    enqueued_at: datetime
    user_id: int | None = None
    state: str = "queued"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tries: int = 0
    worker: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    result: dict[str, Any] | None = None
    progress: float = 0.0
    progress_message: str = ""

    @property
    def revision(self) -> int:
        """queued < try 1 running < try 1 ended < try 2 running < … < cancelled."""
        if self.state == "cancelled":
            return CANCELLED_REVISION
        if self.state == "queued":
            return 0
        return 3 * self.tries + (1 if self.state == "in_progress" else 2)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "queue": self.queue,
            "args": self.args,
            "state": self.state,
            "user_id": self.user_id,
            "enqueued_at": self.enqueued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "tries": self.tries,
            "worker": self.worker,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "traceback": self.traceback,
            "result": self.result,
            "progress": self.progress,
            "progress_message": self.progress_message,
            "revision": self.revision,
        }

    @classmethod
    def from_record(cls, record: JobRecord) -> JobRun:
        return cls(**{field.name: getattr(record, field.name) for field in fields(cls)})

    def fail(self, error: BaseException) -> None:
        self.error_type = type(error).__name__
        self.error_message = str(error)[:MAX_ERROR_CHARS]
        self.traceback = "".join(traceback.format_exception(error))[-MAX_TRACEBACK_CHARS:]


def json_safe(value: Any) -> Any:
    """Plain JSON values, encoded the way job payloads are (datetimes as ISO text, sets as lists)."""
    return orjson.loads(serialize_job({"value": value}))["value"]


def summarize_result(result: Any) -> dict[str, Any] | None:
    if result is None:
        return None
    encoded = serialize_job(result if isinstance(result, dict) else {"value": result})
    if len(encoded) > MAX_RESULT_BYTES:
        return {"truncated": True, "bytes": len(encoded)}
    summary: dict[str, Any] = orjson.loads(encoded)
    return summary


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def bucket_index(duration_s: float) -> int:
    for index, bound in enumerate(DURATION_BOUNDS_S):
        if duration_s <= bound:
            return index
    return len(DURATION_BOUNDS_S)


@dataclass
class Outcomes:
    """Finished tries of one job name on one queue (in one minute), as the rollup tables count them."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOME_COLUMNS, 0))
    duration_sum_s: float = 0.0
    duration_max_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKET_COLUMNS))

    def add(self, outcome: str, duration_s: float | None) -> None:
        self.counts[outcome] += 1
        if duration_s is not None:
            self.duration_sum_s += duration_s
            self.duration_max_s = max(self.duration_max_s, duration_s)
            self.buckets[bucket_index(duration_s)] += 1

    def merge(self, other: Outcomes) -> None:
        for outcome, number in other.counts.items():
            self.counts[outcome] += number
        self.duration_sum_s += other.duration_sum_s
        self.duration_max_s = max(self.duration_max_s, other.duration_max_s)
        self.buckets = [mine + theirs for mine, theirs in zip(self.buckets, other.buckets, strict=True)]

    def values(self) -> dict[str, Any]:
        return {
            **self.counts,
            "duration_sum_s": self.duration_sum_s,
            "duration_max_s": self.duration_max_s,
            **dict(zip(BUCKET_COLUMNS, self.buckets, strict=True)),
        }


OutcomeKey = tuple[datetime, str, str]  # minute, job name, queue


@dataclass
class RecordBatch:
    runs: dict[str, JobRun] = field(default_factory=dict)
    outcomes: dict[OutcomeKey, Outcomes] = field(default_factory=dict)

    def put(self, run: JobRun) -> None:
        """Keep the newer of two states of a job; the user who started it comes from whichever knows."""
        existing = self.runs.get(run.id)
        if existing is not None and existing is not run:
            newer, older = (run, existing) if run.revision >= existing.revision else (existing, run)
            newer.user_id = newer.user_id if newer.user_id is not None else older.user_id
            run = newer
        self.runs[run.id] = run

    def count(self, key: OutcomeKey, outcome: str, duration_s: float | None) -> None:
        outcomes = self.outcomes.get(key)
        if outcomes is None:
            outcomes = self.outcomes[key] = Outcomes()
        outcomes.add(outcome, duration_s)

    def merge(self, other: RecordBatch) -> None:
        for run in other.runs.values():
            self.put(run)
        for key, outcomes in other.outcomes.items():
            if key in self.outcomes:
                self.outcomes[key].merge(outcomes)
            else:
                self.outcomes[key] = outcomes

    def __bool__(self) -> bool:
        return bool(self.runs or self.outcomes)


class JobRecords:
    """This process's unwritten job records; the job base and enqueue() report to it."""

    def __init__(self) -> None:
        self.pending = RecordBatch()
        self.running: dict[str, JobRun] = {}  # jobs started in this process and not yet ended
        self.flushers = 0
        self._writing: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @property
    def collecting(self) -> bool:
        """Whether a flusher in this process will write what is reported here."""
        return self.flushers > 0

    async def enqueued(
        self, redis: Redis, job_id: str, name: str, queue: str, args: dict[str, Any], user_id: int | None
    ) -> None:
        run = JobRun(job_id, name, queue, json_safe(args), utcnow(), user_id=user_id)
        if self.collecting:
            self.pending.put(run)
            return
        try:
            await redis.rpush(HANDOVER_KEY, orjson.dumps(run.row()))  # type: ignore[misc]
        except Exception as error:  # the job is enqueued; its record is made when it starts
            log.warning("cannot hand over the record of job %s: %s", job_id, error)

    def started(
        self, job_id: str, name: str, queue: str, args: dict[str, Any], enqueued_at: datetime, tries: int, worker: str
    ) -> JobRun | None:
        """A try of a job began in this worker process (None when nothing here writes records)."""
        if not self.collecting:
            return None
        run = JobRun(
            job_id, name, queue, args, enqueued_at, state="in_progress", tries=tries, worker=worker, started_at=utcnow()
        )
        self.running[job_id] = run
        self.pending.put(run)
        return run

    def ended(
        self, run: JobRun, state: str, *, result: Any = None, error: BaseException | None = None, counted: bool = True
    ) -> None:
        """A try ended: `complete`, `failed` or `retrying` (counted in the rollups unless it was interrupted)."""
        self.running.pop(run.id, None)
        run.state = state
        run.finished_at = now = utcnow()
        if error is not None:
            run.fail(error)
        if state == "complete":
            run.result = summarize_result(result)
            run.progress = 100.0
        if counted:
            duration_s = (now - run.started_at).total_seconds() if run.started_at else None
            outcome = "retried" if state == "retrying" else state
            self.pending.count((minute_of(now), run.name, run.queue), outcome, duration_s)
        self.pending.put(run)

    def progressed(self, job_id: str, percent: float, message: str) -> None:
        run = self.running.get(job_id)
        if run is not None:
            run.progress = percent
            run.progress_message = message
            self.pending.put(run)

    def take(self) -> RecordBatch:
        batch, self.pending = self.pending, RecordBatch()
        return batch

    def give_back(self, batch: RecordBatch) -> None:
        batch.merge(self.pending)
        self.pending = batch
        excess = len(batch.runs) - MAX_PENDING_RECORDS
        if excess > 0:  # the database has been away long: bound the memory, losing the oldest records
            for job_id in list(batch.runs)[:excess]:
                del batch.runs[job_id]
            log.error("the database is unreachable: dropped %d unwritten job records", excess)

    def _write_lock(self) -> asyncio.Lock:
        # One write at a time, so a flush that returns has seen every earlier one committed.
        loop = asyncio.get_running_loop()
        if self._writing is None or self._writing[0] is not loop:
            self._writing = (loop, asyncio.Lock())
        return self._writing[1]

    async def flush(self, redis: Redis | None, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Write what is pending here and in the Redis handover list; on failure keep it for the next try.
        When it returns, everything reported before the call is in the database."""
        async with self._write_lock():
            return await self._flush(redis, sessions)

    async def _flush(self, redis: Redis | None, sessions: async_sessionmaker[AsyncSession]) -> int:
        batch = self.take()
        if redis is not None:
            try:
                for run in await take_handover(redis):
                    batch.put(run)
            except Exception as error:  # Redis away: write what this process has, take the rest next time
                log.debug("cannot read handed-over job records: %s", error)
        if not batch:
            return 0
        writing = asyncio.ensure_future(self._write(batch, sessions))
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            # Finish the write all the same: a batch given back after its commit would count twice.
            await asyncio.wait({writing})
            raise
        if redis is not None:
            await announce_changes(redis, batch.runs.values())
        return len(batch.runs)

    async def _write(self, batch: RecordBatch, sessions: async_sessionmaker[AsyncSession]) -> None:
        try:
            async with transaction(sessions) as session:
                await write_batch(session, batch)
        except BaseException:
            self.give_back(batch)
            raise


JOB_RECORDS = JobRecords()


def change_of(run: JobRun) -> dict[str, Any]:
    """What a watcher needs to know that a task changed (the dashboard reads the rest when it shows it)."""
    return {
        "id": run.id,
        "name": run.name,
        "queue": run.queue,
        "state": run.state,
        "userId": run.user_id,
        "progress": {"percent": run.progress, "message": run.progress_message},
    }


async def task_owners(session: AsyncSession, task_ids: list[str]) -> dict[str, int]:
    """Who started each of these jobs (those a user started), from their records."""
    query = select(JobRecord.id, JobRecord.user_id).where(
        col(JobRecord.id).in_(task_ids), col(JobRecord.user_id).is_not(None)
    )
    owners: dict[str, int] = dict((await session.execute(query)).all())
    return owners


async def announce_changes(redis: Redis, runs: Iterable[JobRun]) -> None:
    """Publish the records just written (at most MAX_ANNOUNCED: the last put into the batch, not necessarily the
    newest changes; watchers re-read on their own as a backstop) for the admin app's sockets."""
    changes = [change_of(run) for run in runs][-MAX_ANNOUNCED:]
    try:
        await redis.publish(TASKS_CHANNEL, orjson.dumps({"tasks": changes}))
    except Exception as error:  # the records are written; a watcher reads them on its next look
        log.debug("cannot announce task changes: %s", error)


async def take_handover(redis: Redis) -> list[JobRun]:
    raw: list[bytes] | None = await redis.lpop(HANDOVER_KEY, HANDOVER_BATCH)  # type: ignore[misc]
    runs = []
    for item in raw or []:
        row = orjson.loads(item)
        row.pop("revision")
        for name in ("enqueued_at", "started_at", "finished_at"):
            if row[name] is not None:
                row[name] = datetime.fromisoformat(row[name])
        runs.append(JobRun(**row))
    return runs


async def write_batch(session: AsyncSession, batch: RecordBatch) -> None:
    """One upsert of the records and one of each rollup table, in the caller's transaction."""
    runs = list(batch.runs.values())
    await _forget_deleted_users(session, runs)
    dialect = dialect_name(session)
    if runs:
        await session.execute(_record_upsert(dialect), [run.row() for run in runs])
    if batch.outcomes:
        minutes = [
            {"minute": minute, "name": name, "queue": queue, **outcomes.values()}
            for (minute, name, queue), outcomes in batch.outcomes.items()
        ]
        await session.execute(_rollup_upsert(dialect, "minutes"), minutes)
        await session.execute(_rollup_upsert(dialect, "totals"), _totals(batch.outcomes))


def _totals(outcomes: dict[OutcomeKey, Outcomes]) -> list[dict[str, Any]]:
    totals: dict[tuple[str, str], Outcomes] = {}
    for (_, name, queue), counted in outcomes.items():
        totals.setdefault((name, queue), Outcomes()).merge(counted)
    return [{"name": name, "queue": queue, **counted.values()} for (name, queue), counted in totals.items()]


async def _forget_deleted_users(session: AsyncSession, runs: Iterable[JobRun]) -> None:
    # A user deleted between enqueue and write would fail the whole batch on the foreign key.
    user_ids = {run.user_id for run in runs if run.user_id is not None}
    if not user_ids:
        return
    existing = set((await session.execute(select(User.id).where(col(User.id).in_(user_ids)))).scalars())
    for run in runs:
        if run.user_id is not None and run.user_id not in existing:
            run.user_id = None


def _insert(dialect: str, table: sa.Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


@cache
def _record_upsert(dialect: str) -> Any:
    table: sa.Table = JobRecord.__table__  # type: ignore[attr-defined]
    insert = _insert(dialect, table)
    newer = insert.excluded.revision >= table.c.revision
    updates: dict[str, Any] = {
        name: sa.case((newer, insert.excluded[name]), else_=table.c[name]) for name in MUTABLE_FIELDS
    }
    updates["user_id"] = sa.func.coalesce(table.c.user_id, insert.excluded.user_id)
    return insert.on_conflict_do_update(index_elements=[table.c.id], set_=updates)


@cache
def _rollup_upsert(dialect: str, which: str) -> Any:
    table = job_stat_minutes if which == "minutes" else job_stat_totals
    insert = _insert(dialect, table)
    added = (*OUTCOME_COLUMNS, "duration_sum_s", *BUCKET_COLUMNS)
    updates: dict[str, Any] = {name: table.c[name] + insert.excluded[name] for name in added}
    longer = insert.excluded.duration_max_s > table.c.duration_max_s
    updates["duration_max_s"] = sa.case((longer, insert.excluded.duration_max_s), else_=table.c.duration_max_s)
    return insert.on_conflict_do_update(index_elements=list(table.primary_key.columns), set_=updates)


async def write_now(sessions: async_sessionmaker[AsyncSession], batch: RecordBatch) -> None:
    """Write records at once (the API's cancels), through the same upsert the flushers use."""
    async with transaction(sessions) as session:
        await write_batch(session, batch)


class RecordFlusher:
    """Writes this process's job records every FLUSH_INTERVAL_S, and what is left when stopped."""

    def __init__(
        self,
        redis: Redis,
        sessions: async_sessionmaker[AsyncSession],
        *,
        records: JobRecords = JOB_RECORDS,
        interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.redis = redis
        self.sessions = sessions
        self.records = records
        self.interval_s = interval_s
        self.task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()

    def start(self) -> None:
        self.records.flushers += 1
        self.task = asyncio.create_task(self._run(), name="job-record-flusher")

    async def _run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.interval_s)
            try:
                await self.records.flush(self.redis, self.sessions)
            except Exception as error:  # the database is away: keep the records and try again
                log.warning("writing job records failed, will try again: %s", error)

    async def stop(self) -> None:
        """Let a write in progress finish (cancelling it could count it twice), then write the rest."""
        if self.task is None:
            return
        self.stopping.set()
        await asyncio.gather(self.task, return_exceptions=True)
        self.task = None
        self.records.flushers -= 1
        try:
            await self.records.flush(self.redis, self.sessions)
        except Exception as error:
            log.error("could not write job records while stopping: %s", error)
        if not self.records.collecting:
            # Nothing here will write them now; a later flusher may serve another database (tests).
            left = self.records.take()
            self.records.running.clear()
            if left:
                log.error("dropping %d unwritten job records", len(left.runs))
