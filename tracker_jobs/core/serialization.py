"""orjson (de)serialisers for arq (a job payload in Redis is JSON data, never pickled code), and reading\na JSON request body."""

from __future__ import annotations

from typing import Any

import orjson

from tracker_jobs.core.errors import HttpError


def _encode_other(value: Any) -> Any:
    # A failed job's result is its exception; keep what an operator needs, as data.
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def serialize_job(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, default=_encode_other)


def deserialize_job(data: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(data)
    return loaded


def parse_json_body(content_type: str, raw: bytes) -> Any:
    """A request body that must be JSON, on either transport: 415 for another media type, 400 for bad JSON."""
    if content_type != "application/json":
        raise HttpError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise HttpError(400, "invalid_json", f"the body is not valid JSON: {error}") from None
