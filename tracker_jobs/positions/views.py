"""/api/positions: read positions (the newest from the live cache, or a range), and the batch API."""

from __future__ import annotations

import contextlib
from dataclasses import fields
from datetime import timedelta
from typing import Any

from aiohttp import web

from tracker_jobs.api.access import principal
from tracker_jobs.api.keys import REDIS, SESSIONS, SETTINGS
from tracker_jobs.api.openapi import (
    ANY_OBJECT,
    BOOLEAN,
    ERROR,
    ID,
    INTEGER,
    NUMBER,
    STRING,
    TIME,
    JsonSchema,
    Operation,
    Query,
    Reply,
    array,
    describe,
    error_reply,
    nullable,
    obj,
)
from tracker_jobs.api.params import json_body, path_id, query_ids, query_int, query_time
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.core.db import utcnow
from tracker_jobs.core.errors import UNREACHABLE, FieldError, HttpError, not_found
from tracker_jobs.core.fields import MAX_UNIQUE_ID_LENGTH, parse_unique_id
from tracker_jobs.devices.service import get_device, visible_ids_of
from tracker_jobs.monitor.counters import POSITIONS_REJECTED, count
from tracker_jobs.positions.acceptor import Acceptor, CannotAccept
from tracker_jobs.positions.batch import DISABLED, REJECTION_CODES, UNKNOWN, BatchAnswer, resolve_batch
from tracker_jobs.positions.record import API_NAMES, TIMES, PositionRecord
from tracker_jobs.positions.service import latest_positions, positions_in_range
from tracker_jobs.positions.statistics import device_statistics, today_range

ACCEPTOR = web.AppKey("acceptor", Acceptor)  # the batch API's group commit into Redis, one per app
MAX_POSITIONS_PER_REQUEST = 100_000
MAX_STATISTICS_RANGE = timedelta(days=31)
# One position refused: the status the device listener answers for the same reason.
SINGLE_STATUS = {UNKNOWN: 404, DISABLED: 403}


async def get_positions(request: web.Request) -> web.Response:
    device_ids = query_ids(request, "deviceId")
    unique_ids = [parse_unique_id("uniqueId", raw) for raw in request.query.getall("uniqueId", [])]
    start, end = query_time(request, "from"), query_time(request, "to")
    if start is not None and end is not None and start > end:
        raise FieldError("from", "must not be after to")
    limit = query_int(request, "limit")
    limit = MAX_POSITIONS_PER_REQUEST if limit is None else limit
    if not 0 < limit <= MAX_POSITIONS_PER_REQUEST:
        raise FieldError("limit", f"must be from 1 to {MAX_POSITIONS_PER_REQUEST}")
    async with request.app[SESSIONS]() as session:
        if unique_ids:
            device_ids = sorted({*device_ids, *await visible_ids_of(session, principal(request), unique_ids)})
        if start is None and end is None:
            found = await latest_positions(session, request.app[REDIS], principal(request), device_ids)
        else:
            found = await positions_in_range(session, principal(request), device_ids, start, end, limit)
    return json_response(found)


async def _accept_batch(request: web.Request, items: list[Any]) -> BatchAnswer:
    settings = request.app[SETTINGS]
    if len(items) > settings.batch_limit:
        raise HttpError(413, "too_large", f"positions: {len(items)} in one request, at most {settings.batch_limit}")
    now = utcnow()
    try:
        async with request.app[SESSIONS]() as session:
            answer = await resolve_batch(
                session, principal(request), items, now=now, auto_register=settings.auto_register
            )
        if answer.accepted:
            answer.task_ids = (await request.app[ACCEPTOR].accept(answer.accepted)).task_ids
    except UNREACHABLE:
        raise CannotAccept() from None
    if answer.rejected:
        with contextlib.suppress(*UNREACHABLE):  # what was accepted stands: a counter must not turn it into a 503
            await count(request.app[REDIS], {POSITIONS_REJECTED: len(answer.rejected)})
    return answer


def _batch_response(answer: BatchAnswer) -> web.Response:
    body = answer.as_dict()
    if not answer.accepted:
        first = answer.rejected[0] if answer.rejected else {"index": 0, "reason": "the batch is empty"}
        body["error"] = {
            "code": "invalid_positions",
            "message": f"no position accepted; index {first['index']}: {first['reason']}",
        }
        return json_response(body, status=400)
    return json_response(body, status=202)


async def post_positions(request: web.Request) -> web.Response:
    """POST /api/positions and the seed's POST /api/tasks/position/process-batch: a JSON array
    (or {"positions": [...]}); the good positions go through, the bad ones are listed."""
    body = await json_body(request)
    if isinstance(body, dict) and isinstance(body.get("positions"), list):
        body = body["positions"]
    if not isinstance(body, list):
        raise FieldError("positions", "must be a JSON array of positions")
    return _batch_response(await _accept_batch(request, body))


async def post_single_position(request: web.Request) -> web.Response:
    """The seed's POST /api/tasks/position/process-single: one position object."""
    body = await json_body(request)
    answer = await _accept_batch(request, [body])
    if answer.rejected:
        rejection = answer.rejected[0]
        raise HttpError(SINGLE_STATUS.get(rejection["code"], 400), rejection["code"], rejection["reason"])
    return _batch_response(answer)


def _position_schema() -> JsonSchema:
    """The API's position, from the record's own fields: its names, and a schema per annotation."""
    by_annotation = {"int": INTEGER, "str": STRING, "bool": BOOLEAN, "dict[str, Any]": ANY_OBJECT}
    # A stored position always has speed and course (derived when the device sent none).
    by_annotation |= dict.fromkeys(("float", "float | None"), NUMBER)
    annotations = {f.name: str(f.type) for f in fields(PositionRecord)}
    properties = {
        api: TIME if name in TIMES else by_annotation[annotations[name]]
        for name, api in API_NAMES.items()
        if name != "id"
    }
    return obj({"id": nullable(INTEGER), **properties}, required=("deviceId", "fixTime", "latitude", "longitude"))


POSITION = _position_schema()

describe(
    get_positions,
    Operation(
        "Positions of visible devices in a time range, or each one's latest",
        {
            200: Reply("positions ordered per device by fix time", array(POSITION)),
            404: error_reply("a uniqueId names no device the caller may see"),
        },
        query=(
            Query("deviceId", ID, "only these devices (their numeric ids)", repeated=True),
            Query(
                "uniqueId",
                {"type": "string", "maxLength": MAX_UNIQUE_ID_LENGTH},
                "only these devices, by uniqueId",
                repeated=True,
            ),
            Query("from", TIME),
            Query("to", TIME),
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 100_000}),
        ),
        tag="positions",
    ),
)

BATCH_ANSWER = obj(
    {
        "accepted": INTEGER,
        "rejected": array(
            obj({"index": INTEGER, "code": {"type": "string", "enum": list(REJECTION_CODES)}, "reason": STRING})
        ),
        "task_id": nullable(STRING),
        "task_ids": array(STRING),
    },
    required=("accepted", "rejected"),
)

POSITION_INPUT = obj(
    {
        "deviceId": ID,
        "uniqueId": {"type": "string", "minLength": 1, "maxLength": 128},
        "fixTime": TIME,
        "latitude": {"type": "number", "minimum": -90, "maximum": 90},
        "longitude": {"type": "number", "minimum": -180, "maximum": 180},
        "speed": NUMBER,
        "course": NUMBER,
        "altitude": NUMBER,
        "accuracy": NUMBER,
        "valid": BOOLEAN,
        "attributes": ANY_OBJECT,
    },
    required=("latitude", "longitude"),
)

_BATCH = Operation(
    "The batch API: up to TRACKER_BATCH_LIMIT positions in Traccar's shape; the good go through, the bad are "
    "listed by index",
    {
        202: Reply("accepted (in Redis, to be stored)", BATCH_ANSWER),
        400: Reply(
            "no position accepted (the rejected ones are listed), or the body is malformed",
            {"anyOf": [BATCH_ANSWER, ERROR]},
        ),
        503: error_reply("Redis is unreachable; send again", "Retry-After"),
    },
    body={"oneOf": [array(POSITION_INPUT), obj({"positions": array(POSITION_INPUT)})]},
    example=[{"uniqueId": "walk-phone", "fixTime": "2026-01-01T00:00:00Z", "latitude": 52.5, "longitude": 13.4}],
    tag="positions",
)

describe(post_positions, _BATCH)

describe(
    post_single_position,
    Operation(
        "One position on the batch path (the seed's name)",
        {
            202: Reply("accepted", BATCH_ANSWER),
            403: error_reply("the device is disabled"),
            404: error_reply("the device is unknown, or not one of the caller's"),
            503: error_reply("Redis is unreachable; send again", "Retry-After"),
        },
        body=POSITION_INPUT,
        example={"uniqueId": "walk-phone", "fixTime": "2026-01-01T00:00:01Z", "latitude": 52.5, "longitude": 13.4},
        tag="positions",
    ),
)


async def get_statistics(request: web.Request) -> web.Response:
    """Today's statistics (in the configured time zone), and those of ?from=&to= when given."""
    device_id = path_id(request)
    start, end = query_time(request, "from"), query_time(request, "to")
    settings = request.app[SETTINGS]
    if (start is None) != (end is None):
        raise FieldError("to" if end is None else "from", "from and to go together")
    if start is not None and end is not None:
        if start > end:
            raise FieldError("from", "must not be after to")
        if end - start > MAX_STATISTICS_RANGE:
            raise FieldError("to", f"the range may span at most {MAX_STATISTICS_RANGE.days} days")
    async with request.app[SESSIONS]() as session:
        if await get_device(session, principal(request), device_id) is None:
            raise not_found(f"device {device_id}")
        redis, motion = request.app[REDIS], settings.motion_speed_kn
        body = {
            "today": await device_statistics(
                session, redis, device_id, *today_range(utcnow(), settings.timezone), motion
            )
        }
        if start is not None and end is not None:
            body["range"] = await device_statistics(session, redis, device_id, start, end, motion)
    return json_response(body)


STATISTICS = obj(
    {
        "positions": INTEGER,
        "distance": NUMBER,
        "maxSpeed": NUMBER,
        "averageSpeed": NUMBER,
        "movingTime": NUMBER,
    },
    required=(),
    additionalProperties=True,
)
describe(
    get_statistics,
    Operation(
        "A device's statistics today (in TRACKER_TIMEZONE) and, with from and to, over that range (31 days at most)",
        {200: Reply("statistics", obj({"today": STATISTICS, "range": STATISTICS}, required=("today",)))},
        path={"id": ID},
        query=(Query("from", TIME), Query("to", TIME)),
        tag="devices",
    ),
)


ROUTES = [
    Route("GET", "/api/positions", get_positions),
    Route("POST", "/api/positions", post_positions),
    Route("POST", "/api/tasks/position/process-batch", post_positions),
    Route("POST", "/api/tasks/position/process-single", post_single_position),
    Route("GET", "/api/devices/{id}/statistics", get_statistics),
]
