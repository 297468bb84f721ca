"""The admin app factory, and serving it beside the device listener in one process."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker_jobs.admin import devices, health, positions, session
from tracker_jobs.admin.auth import require_token
from tracker_jobs.admin.errors import json_errors
from tracker_jobs.admin.osmand import create_ingest_app
from tracker_jobs.admin.state import set_resources
from tracker_jobs.config import Settings
from tracker_jobs.db import create_engine
from tracker_jobs.redis_client import connect_redis

MAX_BODY_BYTES = 16 * 1024 * 1024
log = logging.getLogger(__name__)


def create_admin_app(settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> web.Application:
    app = web.Application(middlewares=[json_errors, require_token], client_max_size=MAX_BODY_BYTES)
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
    return app


async def serve(settings: Settings, redis_url: str, stopping: asyncio.Event) -> None:
    """Serve the admin API and the device listener until `stopping` is set."""
    redis = await connect_redis(redis_url)
    engine = create_engine(settings.database_url)
    runners = [
        web.AppRunner(create_admin_app(settings, redis, engine), access_log=None),
        web.AppRunner(create_ingest_app(settings, redis, engine), access_log=None),
    ]
    try:
        for runner, port in zip(runners, (settings.admin_port, settings.osmand_port), strict=True):
            await runner.setup()
            await web.TCPSite(runner, settings.host, port, reuse_address=True).start()
        log.info("admin API on http://%s:%d, device listener on http://%s:%d",
                 settings.host, settings.admin_port, settings.host, settings.osmand_port)  # fmt: skip
        await stopping.wait()
    finally:
        for runner in runners:
            await runner.cleanup()
        await redis.aclose()
        await engine.dispose()
