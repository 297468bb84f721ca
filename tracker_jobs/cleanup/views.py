"""The cleanup API (admin only): start each cleanup job with its arguments, and see what retention holds.

`POST /api/tasks/cleanup/{positions,events,cache,duplicates,orphans,optimize}` -> 202 `{task_id}`, to
follow (progress, result, cancel) at /api/tasks/task/{id}; `GET /api/cleanup/status`."""

from __future__ import annotations

from aiohttp import web

from tracker_jobs.api.access import require_admin
from tracker_jobs.api.bodies import read_body
from tracker_jobs.api.errors import Handler
from tracker_jobs.api.keys import REDIS, SESSIONS, SETTINGS
from tracker_jobs.api.openapi import ANY_OBJECT, STRING, Operation, Reply, documented, error_reply, obj
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.cleanup.arguments import check_device_ids
from tracker_jobs.cleanup.cache import check_cache_pattern
from tracker_jobs.cleanup.schemas import CacheCleanup, CleanupBody, DevicesCleanup, RetentionCleanup
from tracker_jobs.cleanup.status import cleanup_status
from tracker_jobs.core.db import utcnow
from tracker_jobs.jobs import refs
from tracker_jobs.jobs.refs import JobRef
from tracker_jobs.monitor.service import run_job
from tracker_jobs.monitor.views import JOB_SPECS, write_pending_records

ACCEPTED = Reply("queued: follow it at /api/tasks/task/{task_id}", obj({"task_id": STRING}))
BAD = error_reply("a field is wrong (negative days, an unknown device, a pattern outside the cache)")


def _starts(ref: JobRef, body_model: type[CleanupBody], summary: str, example: dict[str, object]) -> Handler:
    """The handler that checks a body and enqueues `ref` with it, recorded as the caller's."""

    async def start(request: web.Request) -> web.Response:
        caller = require_admin(request)
        body = await read_body(request, body_model)
        arguments = {name: list(value) if isinstance(value, tuple) else value for name, value in body.given().items()}
        if "device_ids" in arguments:
            await check_device_ids(request.app[SESSIONS], arguments["device_ids"])
        if isinstance(body, CacheCleanup):
            check_cache_pattern(body.pattern)
        task_id = await run_job(request.app[REDIS], caller, request.app[JOB_SPECS][ref.name], arguments)
        await write_pending_records(request)
        return json_response({"task_id": task_id}, status=202)

    operation = Operation(
        summary,
        {202: ACCEPTED, 400: BAD},
        auth="admin",
        body=body_model,
        body_required=False,
        example=example,
        tag="cleanup",
    )
    return documented(operation)(start)


@documented(
    Operation(
        "Table sizes and row estimates, the positions' and events' partitions (the default ones too) with"
        " their ranges and sizes, the oldest position, and what the next retention run would remove",
        {200: Reply("the status", ANY_OBJECT)},
        auth="admin",
        tag="cleanup",
    )
)
async def get_status(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[SESSIONS]() as session:
        status = await cleanup_status(session, request.app[SETTINGS], utcnow())
    return json_response(status)


CLEANUPS = {
    "positions": _starts(
        refs.CLEANUP_OLD_POSITIONS,
        RetentionCleanup,
        "Remove positions past retention (each device's newest kept; per device: attribute retentionDays)",
        {"days_to_keep": 30, "dry_run": True},
    ),
    "events": _starts(
        refs.CLEANUP_OLD_EVENTS,
        RetentionCleanup,
        "Remove events (and their deliveries) past retention",
        {"dry_run": True},
    ),
    "cache": _starts(
        refs.CLEANUP_CACHE,
        CacheCleanup,
        "Remove the engine's cache keys idle too long (and deleted devices' live state)",
        {"pattern": "device-stats:*", "max_age_hours": 24, "dry_run": True},
    ),
    "duplicates": _starts(
        refs.CLEANUP_DUPLICATE_POSITIONS,
        DevicesCleanup,
        "Remove positions that repeat another of the device (same second, same place)",
        {"dry_run": True},
    ),
    "orphans": _starts(
        refs.CLEANUP_ORPHANED_DATA, CleanupBody, "Remove rows that point at something gone", {"dry_run": True}
    ),
    "optimize": _starts(
        refs.OPTIMIZE_DATABASE,
        CleanupBody,
        "VACUUM (ANALYZE) the big tables (PostgreSQL) or PRAGMA optimize and incremental vacuum (SQLite)",
        {"dry_run": True},
    ),
}

ROUTES = [
    *(Route("POST", f"/api/tasks/cleanup/{kind}", handler) for kind, handler in CLEANUPS.items()),
    Route("GET", "/api/cleanup/status", get_status),
]
