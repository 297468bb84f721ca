"""GET /api/positions: a device's positions in a time range, or each visible device's latest."""

from __future__ import annotations

from aiohttp import web

from tracker_jobs.admin.auth import principal
from tracker_jobs.admin.errors import bad_request
from tracker_jobs.admin.params import query_int, query_ints, query_time
from tracker_jobs.admin.responses import json_response
from tracker_jobs.admin.state import SESSIONS
from tracker_jobs.positions.service import list_positions, position_to_api

MAX_POSITIONS_PER_REQUEST = 100_000


async def get_positions(request: web.Request) -> web.Response:
    device_ids = query_ints(request, "deviceId")
    start, end = query_time(request, "from"), query_time(request, "to")
    if start is not None and end is not None and start > end:
        raise bad_request("from", "must not be after to")
    limit = query_int(request, "limit")
    limit = MAX_POSITIONS_PER_REQUEST if limit is None else limit
    if not 0 < limit <= MAX_POSITIONS_PER_REQUEST:
        raise bad_request("limit", f"must be from 1 to {MAX_POSITIONS_PER_REQUEST}")
    async with request.app[SESSIONS]() as session:
        positions = await list_positions(session, principal(request), device_ids, start, end, limit)
    return json_response([position_to_api(position) for position in positions])
