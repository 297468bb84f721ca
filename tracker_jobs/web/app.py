"""The admin app factory, and serving it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker_jobs.api import openapi
from tracker_jobs.api.errors import json_errors
from tracker_jobs.api.keys import REDIS, SESSIONS, set_resources
from tracker_jobs.api.params import bounded_query
from tracker_jobs.cleanup import views as cleanup_views
from tracker_jobs.commands import views as command_views
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import create_engine
from tracker_jobs.core.redis import connect_redis
from tracker_jobs.devices import views as device_views
from tracker_jobs.events import views as event_views
from tracker_jobs.job_catalog import job_specs
from tracker_jobs.jobs.records import RecordFlusher
from tracker_jobs.monitor import views as monitor_views
from tracker_jobs.notifications import views as notification_views
from tracker_jobs.positions import views as position_views
from tracker_jobs.positions.acceptor import Acceptor
from tracker_jobs.reports import views as report_views
from tracker_jobs.users import views as user_views
from tracker_jobs.web import dashboard, health, metrics, socket
from tracker_jobs.web.auth import authenticate

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_REQUEST_LINE_BYTES = 256 * 1024
log = logging.getLogger(__name__)


# Every route of the admin app, each list next to the handlers it names.
ROUTE_LISTS = (
    dashboard.ROUTES,
    health.ROUTES,
    metrics.ROUTES,
    openapi.ROUTES,
    socket.ROUTES,
    user_views.ROUTES,
    device_views.ROUTES,
    command_views.ROUTES,
    event_views.ROUTES,
    notification_views.ROUTES,
    position_views.ROUTES,
    report_views.ROUTES,
    monitor_views.ROUTES,
    cleanup_views.ROUTES,
)


def create_admin_app(settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> web.Application:
    app = web.Application(middlewares=[json_errors, bounded_query, authenticate], client_max_size=MAX_BODY_BYTES)
    set_resources(app, settings, redis, engine)
    app[position_views.ACCEPTOR] = Acceptor(redis, settings.position_partitions)
    app[monitor_views.JOB_SPECS] = job_specs()
    for routes in ROUTE_LISTS:
        for route in routes:
            app.router.add_route(route.method, route.path, route.handler)
    app.cleanup_ctx.extend([socket.live_hub, record_flusher])
    return app


async def record_flusher(app: web.Application) -> AsyncIterator[None]:
    """Write the records of jobs this process enqueues or cancels, while the app runs."""
    flusher = RecordFlusher(app[REDIS], app[SESSIONS])
    flusher.start()
    yield
    await flusher.stop()


async def serve(settings: Settings, redis_url: str, stopping: asyncio.Event) -> None:
    """Serve the admin API until `stopping` is set."""
    redis = await connect_redis(redis_url)
    engine = create_engine(settings.database_url)
    # A long request line (deviceId repeated for a fleet) must reach the app, not aiohttp's 8 KiB limit.
    runner = web.AppRunner(
        create_admin_app(settings, redis, engine), access_log=None, max_line_size=MAX_REQUEST_LINE_BYTES
    )
    try:
        await runner.setup()
        # reuse_port: several admin processes may share the port (the kernel spreads connections).
        await web.TCPSite(runner, settings.host, settings.admin_port, reuse_address=True, reuse_port=True).start()
        log.info("admin API on http://%s:%d", settings.host, settings.admin_port)
        await stopping.wait()
    finally:
        await runner.cleanup()
        await redis.aclose()
        await engine.dispose()
