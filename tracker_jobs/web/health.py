"""GET /health: Redis, database, live workers and each queue's backlog (no token needed, for load balancers),
and the system alerts open now (monitor/alerts.py)."""

from __future__ import annotations

from aiohttp import web

from tracker_jobs.api.keys import ENGINE, REDIS, SETTINGS
from tracker_jobs.api.openapi import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    STRING,
    TIME,
    Operation,
    Reply,
    array,
    describe,
    nullable,
    obj,
)
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.core.db import ping
from tracker_jobs.jobs.heartbeat import live_workers
from tracker_jobs.monitor.alerts import SEVERITIES, open_alerts
from tracker_jobs.monitor.backlog import QueueBacklog, queue_backlogs
from tracker_jobs.monitor.service import queue_alerts, serving_workers


def queue_health(backlog: QueueBacklog, found: list[dict[str, object]]) -> dict[str, object]:
    return {
        "backlog": backlog.waiting + backlog.deferred,
        "oldestWaitingAgeS": backlog.oldest_waiting_age_s,
        "workers": serving_workers(backlog.name, found),
    }


async def health(request: web.Request) -> web.Response:
    redis_ok = True
    found: list[dict[str, object]] = []
    backlogs: list[QueueBacklog] = []
    system_alerts: list[dict[str, object]] = []
    try:
        await request.app[REDIS].ping()
        found = await live_workers(request.app[REDIS])
        backlogs = await queue_backlogs(request.app[REDIS])
        system_alerts = await open_alerts(request.app[REDIS])
    except Exception:  # any Redis failure means "not connected" here
        redis_ok = False
    workers = sum(1 for worker in found if worker["state"] == "live")
    alerts = queue_alerts(backlogs, found, request.app[SETTINGS].backlog_age_limit_s)
    database_ok = await ping(request.app[ENGINE])
    if not (redis_ok and database_ok):
        status, code = "unhealthy", 503
    elif workers == 0 or alerts:
        status, code = "degraded", 200
    else:
        status, code = "healthy", 200
    body = {
        "status": status,
        "redis": {"connected": redis_ok},
        "database": {"connected": database_ok},
        "workers": workers,
        "queues": {backlog.name: queue_health(backlog, found) for backlog in backlogs},
        "alerts": alerts,
        "systemAlerts": system_alerts,
    }
    return json_response(body, status=code)


SYSTEM_ALERT = obj(
    {
        "kind": STRING,
        "severity": {"type": "string", "enum": list(SEVERITIES)},
        "message": STRING,
        "since": nullable(TIME),
    }
)
QUEUE_HEALTH = obj({"backlog": INTEGER, "oldestWaitingAgeS": nullable(NUMBER), "workers": INTEGER})

HEALTH = obj(
    {
        "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
        "redis": obj({"connected": BOOLEAN}),
        "database": obj({"connected": BOOLEAN}),
        "workers": INTEGER,
        "queues": {"type": "object", "additionalProperties": QUEUE_HEALTH},
        "alerts": array(STRING),
        "systemAlerts": array(SYSTEM_ALERT),
    },
    required=("status", "redis", "database", "workers"),
)

describe(
    health,
    Operation(
        "Redis, database, live workers and each queue's backlog; degraded when a queue with jobs has no live "
        "worker or its oldest waiting job is older than TRACKER_BACKLOG_AGE_LIMIT. `systemAlerts`: the system "
        "alerts open now (workerLost, queueBacklog, jobFailures, positionsSetAside, redisMemory, deadDeliveries), "
        "as the minutely check_system_alerts job last found them",
        {200: Reply("healthy or degraded", HEALTH), 503: Reply("Redis or the database is unreachable", HEALTH)},
        auth="none",
        tag="health",
    ),
)


ROUTES = [
    Route("GET", "/health", health),
]
