"""The error family: every refusal the engine answers a caller with is a TrackerError, whose class says
its HTTP status and code once. Domains raise their own errors beneath these (UnknownDevice is a
NotFound, LastAdmin a Conflict, ...); each transport (the admin app, the device listener) turns any of
them into the same JSON document, `{"error": {"code", "message"}}`, in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import redis.exceptions
import sqlalchemy.exc

# Redis (or the database) out of reach, or unable to take writes (out of memory, a read-only replica
# after a failover): whatever was being accepted can be sent again later, so the answer is a 503.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    ConnectionError,
    OSError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)


class TrackerError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})

    def document(self) -> dict[str, Any]:
        return error_document(self.code, self.message)


def error_document(code: str, message: str) -> dict[str, Any]:
    """The body of every error answer, on every transport."""
    return {"error": {"code": code, "message": message}}


class HttpError(TrackerError):
    """A refusal of the request itself (its method, media type, size, ...), with the status it names."""

    def __init__(self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status = status  # type: ignore[misc]  # an instance's own status, where the class gives none
        self.code = code  # type: ignore[misc]


class FieldError(TrackerError, ValueError):
    """A field of a request or of a device's message is missing or wrong."""

    code = "invalid_field"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Unauthorized(TrackerError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(TrackerError):
    status, code = 403, "forbidden"


class NotFound(TrackerError):
    status, code = 404, "not_found"


def not_found(what: str) -> NotFound:
    return NotFound(f"{what} not found")


class Conflict(TrackerError):
    status, code = 409, "conflict"


class TooManyRequests(TrackerError):
    status, code = 429, "rate_limited"

    def __init__(self, wait_s: float, whose: str) -> None:
        retry_after = max(1, math.ceil(wait_s))
        super().__init__(
            f"too many requests {whose}; try again in {retry_after} s", headers={"Retry-After": str(retry_after)}
        )


class Unavailable(TrackerError):
    """Something the answer needs is out of reach for now (Redis, the database, the hashing threads)."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
