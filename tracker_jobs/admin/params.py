"""Reading request bodies and query parameters; every problem is a 400 that names the field."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from tracker_jobs.admin.errors import ApiError, bad_request
from tracker_jobs.positions.decode import FieldError, parse_time


async def json_body(request: web.Request) -> Any:
    return parse_json(request.content_type, await request.read())


def parse_json(content_type: str, raw: bytes) -> Any:
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {error}") from None


async def json_object(request: web.Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    return parse_int(name, raw)


def query_ints(request: web.Request, name: str) -> list[int]:
    return [parse_int(name, raw) for raw in request.query.getall(name, [])]


def parse_int(name: str, raw: object) -> int:
    if isinstance(raw, bool):
        raise bad_request(name, "must be a whole number")
    try:
        value: int = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise bad_request(name, f"must be a whole number, got {str(raw)[:40]!r}") from None
    if not -(2**63) <= value < 2**63:
        raise bad_request(name, "is out of range")
    return value


def path_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(404, "not_found", f"no such {name}: {raw[:40]!r}") from None
    if not 0 < value < 2**31:
        raise ApiError(404, "not_found", f"no such {name}: {value}")
    return value


def query_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_time(name, raw)
    except FieldError as error:
        raise bad_request(error.field, error.problem) from None
