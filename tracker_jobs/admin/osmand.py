"""The device listener (port 5055): the OsmAnd protocol and Traccar Client's JSON, answered as
Traccar answers them.

A 200 is sent only once the position is in Redis; Redis down answers 503 with Retry-After so the
device keeps the position and sends it again.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker_jobs.admin.errors import ApiError, bad_request, json_errors
from tracker_jobs.admin.params import json_body
from tracker_jobs.admin.ratelimit import too_many
from tracker_jobs.admin.state import ACCEPTOR, DIRECTORY, SETTINGS, set_resources
from tracker_jobs.config import Settings
from tracker_jobs.db import utcnow
from tracker_jobs.devices.service import UnknownDevice
from tracker_jobs.positions.decode import DecodedPosition, FieldError, decode_osmand, decode_traccar_client_json
from tracker_jobs.positions.service import RateLimit

log = logging.getLogger(__name__)
# Redis (or, for a new device, the database) out of reach: the device should keep the position.
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError, OSError,
               sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)  # fmt: skip
MAX_BODY_BYTES = 64 * 1024


def redis_unavailable() -> ApiError:
    return ApiError(503, "unavailable", "cannot store positions right now; send again later",
                    headers={"Retry-After": "5"})  # fmt: skip


async def decode_request(request: web.Request) -> DecodedPosition:
    settings = request.app[SETTINGS]
    now = utcnow()
    if request.method == "POST" and request.content_type == "application/json":
        return decode_traccar_client_json(await json_body(request), now=now)
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        params.update(await request.post())
    return decode_osmand(params, now=now, speed_unit=settings.osmand_speed_unit)


async def receive(request: web.Request) -> web.Response:
    try:
        position = await decode_request(request)
    except FieldError as error:
        raise bad_request(error.field, error.problem) from None
    settings = request.app[SETTINGS]
    # Per device, never per address: many trackers report through one gateway.
    limit = RateLimit(settings.device_rate_limit, settings.rate_limit_window_s) if settings.device_rate_limit else None
    try:
        device_id = await request.app[DIRECTORY].resolve(position.unique_id, auto_register=settings.auto_register)
        answer = await request.app[ACCEPTOR].accept([(device_id, position)], limit)
    except UnknownDevice:
        raise ApiError(404, "unknown_device", f"id: device {position.unique_id!r} is not registered") from None
    except UNAVAILABLE as error:
        log.warning("refusing a position: %s", error)
        raise redis_unavailable() from None
    if answer.waits_ms[0]:
        raise too_many(answer.waits_ms[0] / 1000, f"from device {position.unique_id!r}")
    return web.Response(status=200)


def create_ingest_app(settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    set_resources(app, settings, redis, engine)
    app.router.add_route("GET", "/", receive)
    app.router.add_route("POST", "/", receive)
    return app
