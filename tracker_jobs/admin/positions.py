"""/api/positions: read positions (the newest from the live cache, or a range), and the batch API."""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from tracker_jobs.admin.auth import principal
from tracker_jobs.admin.params import json_body, query_ids, query_int, query_time
from tracker_jobs.admin.responses import json_response
from tracker_jobs.admin.state import ACCEPTOR, REDIS, SESSIONS, SETTINGS
from tracker_jobs.core.db import utcnow
from tracker_jobs.core.errors import UNREACHABLE, FieldError, HttpError
from tracker_jobs.monitor.counters import POSITIONS_REJECTED, count
from tracker_jobs.positions.acceptor import CannotAccept
from tracker_jobs.positions.batch import DISABLED, UNKNOWN, BatchAnswer, resolve_batch
from tracker_jobs.positions.service import latest_positions, positions_in_range

MAX_POSITIONS_PER_REQUEST = 100_000
# One position refused: the status the device listener answers for the same reason.
SINGLE_STATUS = {UNKNOWN: 404, DISABLED: 403}


async def get_positions(request: web.Request) -> web.Response:
    device_ids = query_ids(request, "deviceId")
    start, end = query_time(request, "from"), query_time(request, "to")
    if start is not None and end is not None and start > end:
        raise FieldError("from", "must not be after to")
    limit = query_int(request, "limit")
    limit = MAX_POSITIONS_PER_REQUEST if limit is None else limit
    if not 0 < limit <= MAX_POSITIONS_PER_REQUEST:
        raise FieldError("limit", f"must be from 1 to {MAX_POSITIONS_PER_REQUEST}")
    async with request.app[SESSIONS]() as session:
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
