"""The device listener (port 5055): the OsmAnd protocol, answered as Traccar answers it.

A 200 is sent only once the position is in Redis; Redis down answers 503 with Retry-After so the
device keeps the position and sends it again.
"""

from __future__ import annotations

import logging

import redis.exceptions
from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker_jobs.admin.errors import ApiError, bad_request, json_errors
from tracker_jobs.admin.state import REDIS, SESSIONS, SETTINGS, set_resources
from tracker_jobs.config import Settings
from tracker_jobs.db import utcnow
from tracker_jobs.devices.service import UnknownDevice, resolve_device_id
from tracker_jobs.positions.decode import FieldError, decode_osmand
from tracker_jobs.positions.service import accept_positions

log = logging.getLogger(__name__)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError, OSError)
MAX_BODY_BYTES = 64 * 1024


async def osmand(request: web.Request) -> web.Response:
    params = dict(request.query)
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        params.update(await request.post())  # type: ignore[arg-type]
    settings = request.app[SETTINGS]
    now = utcnow()
    try:
        position = decode_osmand(params, now=now, speed_unit=settings.osmand_speed_unit)
    except FieldError as error:
        raise bad_request(error.field, error.problem) from None
    try:
        device_id = await resolve_device_id(
            request.app[REDIS],
            request.app[SESSIONS],
            position.unique_id,
            auto_register=settings.auto_register,
        )
        await accept_positions(request.app[REDIS], settings.position_partitions, [(device_id, position)], now)
    except UnknownDevice:
        raise ApiError(404, "unknown_device", f"id: device {position.unique_id!r} is not registered") from None
    except REDIS_ERRORS as error:
        log.warning("refusing a position, Redis is unreachable: %s", error)
        raise ApiError(503, "unavailable", "cannot store positions right now; send again later",
                       headers={"Retry-After": "5"}) from None  # fmt: skip
    return web.Response(status=200)


def create_ingest_app(settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    set_resources(app, settings, redis, engine)
    app.router.add_route("GET", "/", osmand)
    app.router.add_route("POST", "/", osmand)
    return app
