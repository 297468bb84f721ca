"""The device listener (port 5055): the OsmAnd protocol and Traccar Client's JSON, answered as
Traccar answers them, on the lean HTTP server of `http1` (a device port's hot path).

A 200 is sent only once the position is in Redis; Redis down answers 503 with Retry-After so the
device keeps the position and sends it again.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qsl

import redis.exceptions
import sqlalchemy.exc
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker_jobs.admin.errors import ApiError, bad_request
from tracker_jobs.admin.http1 import HttpServer, Reply, Request, json_error, serve_http
from tracker_jobs.admin.params import parse_json
from tracker_jobs.admin.ratelimit import too_many
from tracker_jobs.admin.state import shared_acceptor, shared_directory
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import utcnow
from tracker_jobs.core.fields import FieldError
from tracker_jobs.devices.service import DisabledDevice, UnknownDevice
from tracker_jobs.monitor.counters import POSITIONS_REJECTED, count
from tracker_jobs.positions.batch import DISABLED, UNKNOWN
from tracker_jobs.positions.decode import DecodedPosition, decode_osmand, decode_traccar_client_json
from tracker_jobs.positions.service import RateLimit

log = logging.getLogger(__name__)
# Redis (or, for a new device, the database) out of reach: the device should keep the position.
# A Redis out of memory or read-only (a replica after failover) cannot take them either.
UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    ConnectionError,
    OSError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)
MAX_BODY_BYTES = 64 * 1024
OK = Reply(200)


def redis_unavailable() -> ApiError:
    return ApiError(
        503, "unavailable", "cannot store positions right now; send again later", headers={"Retry-After": "5"}
    )


def form(encoded: str, charset: str = "utf-8") -> dict[str, str]:
    """Query or form fields; a repeated key keeps its first value, undecodable bytes become U+FFFD."""
    fields: dict[str, str] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True, encoding=charset, errors="replace"):
        fields.setdefault(key, value)
    return fields


def form_body(request: Request) -> dict[str, str]:
    """A form body in its declared charset (UTF-8 if none), trailing line breaks ignored. Only text
    encodings are read: Python also names transforms (base64, zlib, rot13, ...) as codecs."""
    charset = request.charset or "utf-8"
    try:
        if not codecs.lookup(charset)._is_text_encoding:
            raise LookupError(charset)
        return form(request.body.rstrip().decode(charset, "replace"), charset)
    except (LookupError, UnicodeError, ValueError):  # idna and friends fail even with errors="replace"
        raise FieldError(
            "Content-Type", f"charset {charset[:40]!r} is not a text encoding this listener reads"
        ) from None


class DeviceListener:
    """Answers one device request: decode, resolve the device, hand the position to the acceptor."""

    def __init__(self, settings: Settings, redis: ArqRedis, engine: AsyncEngine) -> None:
        self.settings = settings
        self.acceptor = shared_acceptor(settings, redis)
        self.directory = shared_directory(engine)
        # Per device, never per address: many trackers report through one gateway.
        self.limit = (
            RateLimit(settings.device_rate_limit, settings.rate_limit_window_s) if settings.device_rate_limit else None
        )

    async def __call__(self, request: Request) -> Reply:
        try:
            await self.receive(request)
        except ApiError as error:
            return json_error(error.status, error.code, error.message, tuple(error.headers.items()))
        return OK

    def decode(self, request: Request) -> DecodedPosition:
        now = utcnow()
        if request.method == "POST" and request.content_type == "application/json":
            return decode_traccar_client_json(parse_json(request.content_type, request.body), now=now)
        params: dict[str, Any] = form(request.query)
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            params.update(form_body(request))
        return decode_osmand(params, now=now, speed_unit=self.settings.osmand_speed_unit)

    async def refused(self, error: ApiError) -> ApiError:
        """Count a position refused at the door (its device's rate limit counts inside the accept)."""
        with contextlib.suppress(*UNAVAILABLE):
            await count(self.acceptor.redis, {POSITIONS_REJECTED: 1})
        return error

    async def receive(self, request: Request) -> None:
        if request.path != "/":
            raise ApiError(404, "not_found", f"{request.path[:80]} not found; devices report to /")
        if request.method not in ("GET", "POST"):
            raise ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed; use GET or POST",
                headers={"Allow": "GET, POST"},
            )
        try:
            position = self.decode(request)
            device_id = await self.directory.resolve(position.unique_id, auto_register=self.settings.auto_register)
        except FieldError as error:
            raise await self.refused(bad_request(error.field, error.problem)) from None
        except UnknownDevice:
            refusal = ApiError(404, UNKNOWN, f"id: device {position.unique_id!r} is not registered")
            raise await self.refused(refusal) from None
        except DisabledDevice:
            raise await self.refused(
                ApiError(403, DISABLED, f"id: device {position.unique_id!r} is disabled")
            ) from None
        except UNAVAILABLE as error:
            log.warning("refusing a position: %s", error)
            raise redis_unavailable() from None
        try:
            answer = await self.acceptor.accept([(device_id, position)], self.limit)
        except UNAVAILABLE as error:
            log.warning("refusing a position: %s", error)
            raise redis_unavailable() from None
        if answer.waits_ms[0]:
            raise too_many(answer.waits_ms[0] / 1000, f"from device {position.unique_id!r}")


async def serve_listener(settings: Settings, redis: ArqRedis, engine: AsyncEngine, host: str, port: int) -> HttpServer:
    return await serve_http(
        DeviceListener(settings, redis, engine),
        host,
        port,
        max_body_bytes=MAX_BODY_BYTES,
        max_connections=settings.listener_max_connections,
        max_connections_per_address=settings.listener_max_connections_per_address,
    )
