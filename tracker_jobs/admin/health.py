"""GET /health: Redis, database and live workers (no token needed, for load balancers)."""

from __future__ import annotations

from aiohttp import web

from tracker_jobs.admin.responses import json_response
from tracker_jobs.admin.state import ENGINE, REDIS
from tracker_jobs.db import ping
from tracker_jobs.monitor.heartbeat import live_workers


async def health(request: web.Request) -> web.Response:
    redis_ok = True
    workers = 0
    try:
        await request.app[REDIS].ping()
        workers = sum(1 for worker in await live_workers(request.app[REDIS]) if worker["state"] == "live")
    except Exception:  # any Redis failure means "not connected" here
        redis_ok = False
    database_ok = await ping(request.app[ENGINE])
    if not (redis_ok and database_ok):
        status, code = "unhealthy", 503
    elif workers == 0:
        status, code = "degraded", 200
    else:
        status, code = "healthy", 200
    body = {
        "status": status,
        "redis": {"connected": redis_ok},
        "database": {"connected": database_ok},
        "workers": workers,
    }
    return json_response(body, status=code)
