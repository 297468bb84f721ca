"""The four queues, which job runs on which, the one base every job shares, and enqueueing.

`@job()` registers a job under its function's name and wraps it with what every job needs:
transient failures (database or Redis unreachable, SQLite busy) become arq retries with backoff,
and the worker process's heartbeat counts it.
"""

from __future__ import annotations

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

from tracker_jobs.monitor.heartbeat import CURRENT_PROCESS

POSITIONS = "positions"
REPORTS = "reports"
CLEANUP = "cleanup"
NOTIFICATIONS = "notifications"
QUEUES = (POSITIONS, REPORTS, CLEANUP, NOTIFICATIONS)
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


# Which job runs on which queue: the one table every process reads (the admin app enqueues by name
# without importing the jobs themselves).
JOB_QUEUES: dict[str, str] = {
    "process_position_batch": POSITIONS,
    "sweep_position_partitions": POSITIONS,
    "cleanup_expired_sessions": CLEANUP,
    "send_webhook": NOTIFICATIONS,
}


def queue_key(queue: str) -> str:
    """The Redis key (arq queue name) of a queue."""
    return f"{_QUEUE_PREFIX}{queue}"


def queue_of_key(key: str) -> str:
    return key.removeprefix(_QUEUE_PREFIX)


@dataclass(frozen=True)
class JobSpec:
    name: str
    queue: str
    coroutine: JobFunction  # the wrapped job, as arq calls it: (ctx, **kwargs)
    timeout_s: int
    max_tries: int
    keep_result_s: int


REGISTRY: dict[str, JobSpec] = {}


def retry_delay_s(job_try: int) -> int:
    """Exponential backoff: 1, 2, 4 … seconds, at most a minute."""
    return int(min(2 ** max(job_try - 1, 0), 60))


def job(*, timeout_s: int = 300, max_tries: int = 5, keep_result_s: int = 3600) -> Callable[[JobFunction], JobFunction]:
    def register(function: JobFunction) -> JobFunction:
        queue = JOB_QUEUES[function.__name__]  # a KeyError here: add the job to JOB_QUEUES

        @functools.wraps(function)
        async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            job_id = str(ctx.get("job_id", ""))
            CURRENT_PROCESS.job_started(job_id, function.__name__)
            try:
                result = await function(ctx, *args, **kwargs)
            except TRANSIENT_ERRORS as error:
                CURRENT_PROCESS.job_ended(job_id, failed=False)
                delay = retry_delay_s(int(ctx.get("job_try", 1)))
                log.warning("%s: %s: %s; retrying in %d s", function.__name__, type(error).__name__, error, delay)
                raise Retry(defer=delay) from error
            except BaseException:
                CURRENT_PROCESS.job_ended(job_id, failed=True)
                raise
            CURRENT_PROCESS.job_ended(job_id, failed=False)
            return result

        REGISTRY[function.__name__] = JobSpec(function.__name__, queue, run, timeout_s, max_tries, keep_result_s)
        return run

    return register


async def enqueue(redis: ArqRedis, name: str, *, job_id: str | None = None, **kwargs: Any) -> Job | None:
    """Enqueue a registered job on its queue; None when a job with `job_id` already exists."""
    return await redis.enqueue_job(name, _queue_name=queue_key(JOB_QUEUES[name]), _job_id=job_id, **kwargs)
