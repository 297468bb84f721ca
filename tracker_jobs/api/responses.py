"""JSON responses encoded with orjson (fast for long position lists; datetimes as ISO-8601)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")
