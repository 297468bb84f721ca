"""/api/tasks: job records, queues, workers and statistics; cancel, retry and run jobs.

Status, queues, workers, stats and run are for admins. A user lists, reads, cancels and retries only
the jobs they started; anyone else's are 404 to them, as is an unknown or malformed id.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from tracker_jobs.api.access import principal, require_admin
from tracker_jobs.api.keys import REDIS, SESSIONS
from tracker_jobs.api.openapi import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    NUMBER,
    PAGE_QUERIES,
    STRING,
    TIME,
    Operation,
    Query,
    Reply,
    array,
    documented,
    error_reply,
    nullable,
    obj,
)
from tracker_jobs.api.params import bounded_query_int, json_object, page, query_time
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.core.errors import FieldError, NotFound, not_found
from tracker_jobs.jobs.base import JobSpec
from tracker_jobs.jobs.records import JOB_RECORDS, STATES
from tracker_jobs.jobs.refs import QUEUES
from tracker_jobs.monitor import service
from tracker_jobs.monitor.stats import WINDOWS, job_history, job_stats

log = logging.getLogger(__name__)
MAX_RETRY_FAILED = 10_000

TASK = obj(
    {
        "id": STRING,
        "name": STRING,
        "queue": STRING,
        "args": ANY_OBJECT,
        "state": {"type": "string", "enum": list(STATES)},
        "userId": nullable(INTEGER),
        "enqueuedAt": TIME,
        "startedAt": nullable(TIME),
        "finishedAt": nullable(TIME),
        "durationS": nullable(NUMBER),
        "tries": INTEGER,
        "worker": nullable(STRING),
        "error": nullable(obj({"type": STRING, "message": nullable(STRING), "traceback": nullable(STRING)})),
        "result": nullable(ANY_OBJECT),
        "progress": obj({"percent": NUMBER, "message": STRING}),
        "retriedAs": nullable(STRING),
    }
)
TASK_ID = {"type": "string", "minLength": 1}
ACCEPTED = obj({"task_id": STRING})
COUNTS = {"type": "object", "additionalProperties": INTEGER}
QUEUE = obj(
    {
        "name": STRING,
        "length": INTEGER,
        "waiting": INTEGER,
        "running": INTEGER,
        "deferred": INTEGER,
        "oldestWaitingAgeS": nullable(NUMBER),
        "workers": INTEGER,
    }
)
WORKER = obj(
    {
        "id": STRING,
        "host": STRING,
        "pid": INTEGER,
        "state": {"type": "string", "enum": ["live", "lost"]},
        "queues": array(STRING),
        "concurrency": COUNTS,
        "running": array(obj({"id": STRING, "name": STRING})),
        "done": INTEGER,
        "failed": INTEGER,
        "started": TIME,
        "lastHeartbeat": TIME,
    }
)
DURATION = nullable(NUMBER)
HISTORY = obj(
    {
        "window": STRING,
        "stepS": INTEGER,
        "points": array(obj({"at": TIME, "complete": INTEGER, "failed": INTEGER})),
    }
)
STAT = obj(
    {
        "name": STRING,
        "queue": STRING,
        "window": STRING,
        "counts": COUNTS,
        "failureRate": nullable(NUMBER),
        "durationS": obj({"p50": DURATION, "p95": DURATION, "max": DURATION, "mean": DURATION}),
        "throughputPerMin": NUMBER,
    }
)
STATUS = obj(
    {
        "queues": {"type": "object", "additionalProperties": COUNTS},
        "workers": obj({"live": INTEGER, "lost": INTEGER}),
        "running": array(TASK),
    }
)
RUNNABLE = obj(
    {
        "name": STRING,
        "queue": STRING,
        "parameters": array(
            obj(
                {"name": STRING, "type": STRING, "required": BOOLEAN, "default": {}},
                required=("name", "type", "required"),
            )
        ),
    }
)
MAX_SEARCH = 200
FILTERS = (
    Query("state", {"type": "string", "enum": list(STATES)}, "only tasks in these states", repeated=True),
    Query("name", STRING, "only this job"),
    Query("queue", {"type": "string", "enum": list(QUEUES)}, "only this queue"),
    Query("from", TIME, "enqueued at or after"),
    Query("to", TIME, "enqueued at or before"),
    Query("q", {"type": "string", "maxLength": MAX_SEARCH}, "only tasks whose arguments, as JSON, hold this text"),
)
TASK_PATH = {"id": TASK_ID}
NOT_NOW = error_reply("the task's state does not allow it (already finished, not failed, already retried)")


def task_filters(request: web.Request) -> service.TaskFilters:
    states = request.query.getall("state", [])
    for state in states:
        if state not in STATES:
            raise FieldError("state", f"must be one of {', '.join(STATES)}, got {state[:40]!r}")
    queue = request.query.get("queue") or None
    if queue is not None and queue not in QUEUES:
        raise FieldError("queue", f"must be one of {', '.join(QUEUES)}, got {queue[:40]!r}")
    start, end = query_time(request, "from"), query_time(request, "to")
    if start is not None and end is not None and start > end:
        raise FieldError("from", "must not be after to")
    search = request.query.get("q") or None
    if search is not None and len(search) > MAX_SEARCH:
        raise FieldError("q", f"must be at most {MAX_SEARCH} characters")
    return service.TaskFilters(states, request.query.get("name") or None, queue, start, end, search)


def task_not_found(task_id: str) -> NotFound:
    return not_found(f"task {task_id[:64]!r}")


async def write_pending_records(request: web.Request) -> None:
    """Write this process's pending records now, so a task just enqueued here can be read at once."""
    try:
        await JOB_RECORDS.flush(request.app[REDIS], request.app[SESSIONS])
    except Exception as error:  # the background flusher tries again; the job itself is enqueued
        log.warning("writing job records failed: %s", error)


@documented(
    Operation(
        "Counts per queue and state, live and lost workers, the jobs running now",
        {200: Reply("status", STATUS)},
        auth="admin",
        tag="tasks",
    )
)
async def get_status(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[SESSIONS]() as session:
        return json_response(await service.task_status(request.app[REDIS], session))


@documented(
    Operation(
        "One entry per queue: jobs waiting, running, deferred, the oldest waiting job's age",
        {200: Reply("queues", array(QUEUE))},
        auth="admin",
        tag="tasks",
    )
)
async def get_queues(request: web.Request) -> web.Response:
    require_admin(request)
    return json_response(await service.queues(request.app[REDIS]))


@documented(
    Operation(
        "One entry per worker process; silent for 3 heartbeats it is lost, later dropped",
        {200: Reply("workers", array(WORKER))},
        auth="admin",
        tag="tasks",
    )
)
async def get_workers(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[SESSIONS]() as session:
        return json_response(await service.workers(request.app[REDIS], session))


@documented(
    Operation(
        "Per job name and queue over the window: counts by outcome and state, failure rate, duration p50/p95/max, "
        "throughput per minute",
        {200: Reply("statistics", array(STAT))},
        auth="admin",
        query=(Query("window", {"type": "string", "enum": list(WINDOWS)}, "1h (default) or 24h"),),
        tag="tasks",
    )
)
async def get_stats(request: web.Request) -> web.Response:
    require_admin(request)
    window = stats_window(request)
    async with request.app[SESSIONS]() as session:
        return json_response(await job_stats(session, window))


def stats_window(request: web.Request) -> str:
    window = request.query.get("window") or "1h"
    if window not in WINDOWS:
        raise FieldError("window", f"must be one of {', '.join(WINDOWS)}")
    return window


@documented(
    Operation(
        "Jobs completed and failed per step over the window (a minute over 1h, half an hour over 24h), oldest first",
        {200: Reply("history", HISTORY)},
        auth="admin",
        query=(Query("window", {"type": "string", "enum": list(WINDOWS)}, "1h (default) or 24h"),),
        tag="tasks",
    )
)
async def get_history(request: web.Request) -> web.Response:
    require_admin(request)
    window = stats_window(request)
    async with request.app[SESSIONS]() as session:
        return json_response(await job_history(session, window))


@documented(
    Operation(
        "The jobs that may be run by hand, with their arguments",
        {200: Reply("jobs", array(RUNNABLE))},
        auth="admin",
        tag="tasks",
    )
)
async def get_runnable_jobs(request: web.Request) -> web.Response:
    require_admin(request)
    specs: dict[str, JobSpec] = request.app[JOB_SPECS]
    return json_response(service.runnable_jobs(specs))


@documented(
    Operation(
        "Task records, newest first (a user sees the tasks they started)",
        {200: Reply("tasks", array(TASK))},
        query=(
            *FILTERS,
            *PAGE_QUERIES,
        ),
        tag="tasks",
    )
)
async def list_task_records(request: web.Request) -> web.Response:
    filters = task_filters(request)
    limit, offset = page(request)
    await write_pending_records(request)
    async with request.app[SESSIONS]() as session:
        records = await service.list_tasks(session, principal(request), filters, limit, offset)
    return json_response([service.task_to_api(record) for record in records])


@documented(
    Operation(
        "One task's record, with a running job's live progress",
        {200: Reply("the task", TASK)},
        path=TASK_PATH,
        tag="tasks",
    )
)
async def get_task_record(request: web.Request) -> web.Response:
    task_id = request.match_info["id"]
    record = await service.find_task(request.app[SESSIONS], principal(request), task_id)
    if record is None and service.is_task_id(task_id):
        await write_pending_records(request)  # enqueued here moments ago, perhaps
        record = await service.find_task(request.app[SESSIONS], principal(request), task_id)
    if record is None:
        raise task_not_found(task_id)
    return json_response(await service.task_with_progress(request.app[REDIS], record))


@documented(
    Operation(
        "Cancel: removed from its queue if waiting, aborted if running; cancelled either way",
        {200: Reply("the cancelled task", TASK), 409: NOT_NOW},
        path=TASK_PATH,
        tag="tasks",
    )
)
async def cancel_task_record(request: web.Request) -> web.Response:
    task_id = request.match_info["id"]
    await write_pending_records(request)
    record = await service.cancel_task(request.app[REDIS], request.app[SESSIONS], principal(request), task_id)
    if record is None:
        raise task_not_found(task_id)
    return json_response(service.task_to_api(record))


@documented(
    Operation(
        "Enqueue a failed or cancelled task again with the same arguments",
        {202: Reply("the new task", ACCEPTED), 409: NOT_NOW},
        path=TASK_PATH,
        tag="tasks",
    )
)
async def retry_task_record(request: web.Request) -> web.Response:
    task_id = request.match_info["id"]
    new_id = await service.retry_task(request.app[REDIS], request.app[SESSIONS], principal(request), task_id)
    if new_id is None:
        raise task_not_found(task_id)
    await write_pending_records(request)
    return json_response({"task_id": new_id}, status=202)


@documented(
    Operation(
        "Retry every failed task that matches the filters and was not retried yet (a user: their own)",
        {202: Reply("the new tasks", obj({"task_ids": array(STRING), "count": INTEGER}))},
        query=(
            *FILTERS,
            Query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_RETRY_FAILED},
                f"at most this many (default {MAX_RETRY_FAILED})",
            ),
        ),
        tag="tasks",
    )
)
async def retry_failed_tasks(request: web.Request) -> web.Response:
    filters = task_filters(request)
    limit = bounded_query_int(request, "limit", MAX_RETRY_FAILED, 1, MAX_RETRY_FAILED)
    new_ids = await service.retry_failed(request.app[REDIS], request.app[SESSIONS], principal(request), filters, limit)
    await write_pending_records(request)
    return json_response({"task_ids": new_ids, "count": len(new_ids)}, status=202)


@documented(
    Operation(
        "Run a job by hand (see GET /api/tasks/jobs); the body holds its arguments",
        {202: Reply("the task", ACCEPTED)},
        auth="admin",
        path={"job_name": STRING},
        body=ANY_OBJECT,
        body_required=False,
        example={"seconds": 0},
        tag="tasks",
    )
)
async def run_task(request: web.Request) -> web.Response:
    caller = require_admin(request)
    name = request.match_info["job_name"]
    spec = request.app[JOB_SPECS].get(name)
    if spec is None or not spec.ref.by_hand:
        raise not_found(f"runnable job {name[:64]!r}")
    arguments: dict[str, Any] = await json_object(request) if request.body_exists else {}
    task_id = await service.run_job(request.app[REDIS], caller, spec, arguments)
    await write_pending_records(request)
    return json_response({"task_id": task_id}, status=202)


# Every job with its function, for running one by hand: given by the app factory, which may import the jobs.
JOB_SPECS = web.AppKey("job_specs", dict[str, JobSpec])

ROUTES = [
    Route("GET", "/api/tasks/status", get_status),
    Route("GET", "/api/tasks/queues", get_queues),
    Route("GET", "/api/tasks/workers", get_workers),
    Route("GET", "/api/tasks/stats", get_stats),
    Route("GET", "/api/tasks/history", get_history),
    Route("GET", "/api/tasks/jobs", get_runnable_jobs),
    Route("GET", "/api/tasks", list_task_records),
    Route("POST", "/api/tasks/retry-failed", retry_failed_tasks),
    Route("GET", "/api/tasks/task/{id}", get_task_record),
    Route("DELETE", "/api/tasks/task/{id}", cancel_task_record),
    Route("POST", "/api/tasks/task/{id}/retry", retry_task_record),
    Route("POST", "/api/tasks/run/{job_name}", run_task),
]
