"""The one base every job shares, and enqueueing by reference (jobs/refs.py declares every job).

`@job(REF)` registers a function as the job REF names and wraps it with what every job needs:
transient failures (database or Redis unreachable, SQLite busy) become arq retries with backoff,
the job's record follows every try (jobs/records.py), its log lines name it, and the worker
process's heartbeat counts it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from arq import Retry
from arq.connections import ArqRedis
from arq.jobs import Job
from sqlalchemy.ext.asyncio import AsyncSession

from tracker_jobs.core.db import after_commit, utcnow
from tracker_jobs.jobs.heartbeat import CURRENT_PROCESS
from tracker_jobs.jobs.logs import CURRENT_JOB
from tracker_jobs.jobs.records import JOB_RECORDS, JobRun
from tracker_jobs.jobs.refs import JOBS, JobRef

_QUEUE_PREFIX = "tracker:queue:"

JobFunction = Callable[..., Awaitable[Any]]  # (ctx, **kwargs) -> JSON-safe result
log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,  # database unreachable, SQLite busy
    sqlalchemy.exc.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


# The job base enforces each job's timeout itself, so the record says why it stopped; arq's own
# timeout is a backstop this much later.
ARQ_TIMEOUT_GRACE_S = 5


class JobTimeout(Exception):
    """A job ran longer than its timeout."""


class JobInterrupted(Exception):
    """A try stopped before it ended: its worker stopped, or the job was cancelled."""


def queue_key(queue: str) -> str:
    """The Redis key (arq queue name) of a queue."""
    return f"{_QUEUE_PREFIX}{queue}"


def queue_of_key(key: str) -> str:
    return key.removeprefix(_QUEUE_PREFIX)


@dataclass(frozen=True)
class JobSpec:
    ref: JobRef
    coroutine: JobFunction  # the wrapped job, as arq calls it: (ctx, **kwargs)
    timeout_s: int
    max_tries: int
    keep_result_s: int
    function: JobFunction  # the job as written: its signature declares the arguments

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def queue(self) -> str:
        return self.ref.queue

    @property
    def arq_timeout_s(self) -> int:
        return self.timeout_s + ARQ_TIMEOUT_GRACE_S


REGISTRY: dict[str, JobSpec] = {}


def retry_delay_s(job_try: int) -> int:
    """Exponential backoff: 1, 2, 4 … seconds, at most a minute."""
    return int(min(2 ** max(job_try - 1, 0), 60))


def job(
    ref: JobRef, *, timeout_s: int = 300, max_tries: int = 5, keep_result_s: int = 3600
) -> Callable[[JobFunction], JobFunction]:
    """Register the function as the job `ref` names, wrapped in what every job needs."""
    name, queue = ref.name, ref.queue

    def register(function: JobFunction) -> JobFunction:
        @functools.wraps(function)
        async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            job_id = str(ctx.get("job_id", ""))
            job_try = int(ctx.get("job_try", 1))
            record = (
                JOB_RECORDS.started(
                    job_id, name, queue, kwargs, ctx.get("enqueue_time") or utcnow(), job_try, CURRENT_PROCESS.key
                )
                if job_id
                else None
            )
            running = CURRENT_JOB.set((job_id, name))
            CURRENT_PROCESS.job_started(job_id, name)
            deadline = asyncio.timeout(timeout_s)
            try:
                async with deadline:
                    result = await function(ctx, *args, **kwargs)
            except TRANSIENT_ERRORS as error:
                if deadline.expired():
                    timeout = JobTimeout(f"{name} ran longer than its timeout of {timeout_s} s")
                    _ended(job_id, record, "failed", error=timeout)
                    raise timeout from error
                if job_try >= max_tries:
                    _ended(job_id, record, "failed", error=error)
                    raise
                delay = retry_delay_s(job_try)
                log.warning("%s: %s: %s; retrying in %d s", name, type(error).__name__, error, delay)
                _ended(job_id, record, "retrying", error=error)
                raise Retry(defer=delay) from error
            except Retry as retry:  # the job asked for it
                _ended(job_id, record, "retrying", error=retry)
                raise
            except asyncio.CancelledError:
                # The worker is stopping (arq runs the job again) or the job was cancelled, which
                # the record already says and keeps saying (a cancel outranks later writes).
                interrupted = JobInterrupted("the job was interrupted before it ended")
                _ended(job_id, record, "retrying", error=interrupted, counted=False)
                raise
            except BaseException as error:
                _ended(job_id, record, "failed", error=error)
                raise
            finally:
                CURRENT_JOB.reset(running)
            _ended(job_id, record, "complete", result=result)
            return result

        REGISTRY[name] = JobSpec(ref, run, timeout_s, max_tries, keep_result_s, function)
        JOBS.setdefault(name, ref)  # a job declared elsewhere (a test's probe) is known by name too
        return run

    return register


def _ended(
    job_id: str,
    record: JobRun | None,
    state: str,
    *,
    result: Any = None,
    error: BaseException | None = None,
    counted: bool = True,
) -> None:
    CURRENT_PROCESS.job_ended(job_id, failed=state == "failed")
    if record is not None:
        JOB_RECORDS.ended(record, state, result=result, error=error, counted=counted)


def enqueue_after_commit(
    session: AsyncSession,
    redis: ArqRedis,
    ref: JobRef,
    *,
    job_id: str | None = None,
    user_id: int | None = None,
    **kwargs: Any,
) -> None:
    """Enqueue the job once the session's transaction commits (never if it rolls back): the way to start
    a job that reads what the same transaction writes."""
    after_commit(session, lambda: enqueue(redis, ref, job_id=job_id, user_id=user_id, **kwargs))


async def enqueue(
    redis: ArqRedis,
    ref: JobRef,
    *,
    job_id: str | None = None,
    user_id: int | None = None,
    defer_s: float | None = None,
    **kwargs: Any,
) -> Job | None:
    """Enqueue the job on its queue (to start `defer_s` from now, if given), recorded as started by
    `user_id` (who may then see and steer it); None when a job with `job_id` already exists."""
    enqueued = await redis.enqueue_job(
        ref.name, _queue_name=queue_key(ref.queue), _job_id=job_id, _defer_by=defer_s, **kwargs
    )
    if enqueued is not None:
        await JOB_RECORDS.enqueued(redis, enqueued.job_id, ref.name, ref.queue, kwargs, user_id)
    return enqueued
