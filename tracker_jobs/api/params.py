"""Reading request bodies and query parameters; every problem is a 400 that names the field."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from tracker_jobs.api.errors import Handler
from tracker_jobs.core.errors import FieldError, HttpError
from tracker_jobs.core.fields import ID_MAX, parse_id, parse_time
from tracker_jobs.core.fields import parse_int as parse_field_int
from tracker_jobs.core.serialization import parse_json_body


async def json_body(request: web.Request) -> Any:
    return parse_json_body(request.content_type, await request.read())


async def json_object(request: web.Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_json", "the body must be a JSON object")
    return body


@web.middleware
async def bounded_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No query parameter reaches a handler, a log line or the database with a NUL character in it."""
    for name, value in request.query.items():
        if "\x00" in name or "\x00" in value:
            raise FieldError(name.replace("\x00", "\\0")[:40], "must not contain NUL characters")
    return await handler(request)


def query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    return parse_int(name, raw)


def query_bool(request: web.Request, name: str) -> bool:
    """An optional true/false parameter (absent: false)."""
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise FieldError(name, "must be true or false")
    return raw == "true"


def query_ids(request: web.Request, name: str) -> list[int]:
    """A repeated id parameter (?deviceId=1&deviceId=2); each within the id column's range."""
    try:
        return [parse_id(name, raw) for raw in request.query.getall(name, [])]
    except FieldError as error:
        raise FieldError(error.field, error.problem) from None


def query_id(request: web.Request, name: str) -> int | None:
    """One optional id parameter, within the id column's range."""
    ids = query_ids(request, name)
    return ids[0] if ids else None


def parse_int(name: str, raw: object) -> int:
    try:
        return parse_field_int(name, raw)
    except FieldError as error:
        raise FieldError(error.field, error.problem) from None


def path_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(404, "not_found", f"no such {name}: {raw[:40]!r}") from None
    if not 0 < value <= ID_MAX:
        raise HttpError(404, "not_found", f"no such {name}: {value}")
    return value


def query_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_time(name, raw)
    except FieldError as error:
        raise FieldError(error.field, error.problem) from None


def bounded_query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    value = query_int(request, name)
    if value is None:
        return default
    if not low <= value <= high:
        raise FieldError(name, f"must be from {low} to {high}")
    return value


# Pages of a list (the tasks, the reports): ?limit=&offset=, the same bounds everywhere.
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_OFFSET = 10_000_000


def page(request: web.Request) -> tuple[int, int]:
    """(limit, offset) of a list request, each within its bounds (400 naming it otherwise)."""
    return (
        bounded_query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE),
        bounded_query_int(request, "offset", 0, 0, MAX_OFFSET),
    )
