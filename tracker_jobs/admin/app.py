"""The admin app factory, and serving it."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker_jobs.admin import devices, health, metrics, openapi, positions, reports, session, socket, tasks, users
from tracker_jobs.admin.auth import authenticate
from tracker_jobs.admin.errors import json_errors
from tracker_jobs.admin.params import bounded_query
from tracker_jobs.admin.state import set_resources
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import create_engine
from tracker_jobs.core.redis import connect_redis

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_REQUEST_LINE_BYTES = 256 * 1024
log = logging.getLogger(__name__)


def create_admin_app(settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> web.Application:
    app = web.Application(middlewares=[json_errors, bounded_query, authenticate], client_max_size=MAX_BODY_BYTES)
    set_resources(app, settings, redis, engine)
    router = app.router
    router.add_get("/health", health.health)
    router.add_post("/api/session", session.create_session)
    router.add_delete("/api/session", session.delete_session)
    router.add_get("/api/devices", devices.list_devices)
    router.add_post("/api/devices", devices.create_device)
    router.add_get("/api/devices/{id}", devices.get_device)
    router.add_put("/api/devices/{id}", devices.update_device)
    router.add_delete("/api/devices/{id}", devices.delete_device)
    router.add_get("/api/positions", positions.get_positions)
    router.add_post("/api/positions", positions.post_positions)
    router.add_post("/api/tasks/position/process-batch", positions.post_positions)
    router.add_post("/api/tasks/position/process-single", positions.post_single_position)
    router.add_get("/api/devices/{id}/statistics", devices.get_statistics)
    router.add_post("/api/tasks/report/device", reports.post_device_report)
    router.add_post("/api/tasks/report/fleet", reports.post_fleet_report)
    router.add_get("/api/reports", reports.list_reports)
    router.add_get(r"/api/reports/{id:\d+}", reports.get_report)
    router.add_get(r"/api/reports/{id:\d+}/download", reports.download_report)
    router.add_get("/api/reports/{kind}", reports.direct_report)
    socket.install(app)
    tasks.install(app)
    users.install(app)
    metrics.install(app)
    openapi.install(app)
    return app


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
