"""orjson (de)serialisers for arq: a job payload in Redis is JSON data, never pickled code."""

from __future__ import annotations

from typing import Any

import orjson


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
