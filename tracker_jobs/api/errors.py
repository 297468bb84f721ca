"""Every error as JSON `{"error": {"code", "message"}}` with the right status; never HTML or a traceback.

The engine's own refusals are TrackerErrors (core/errors.py), which carry their status; aiohttp's own
(404 for an unknown route, 405, 413) are answered in the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tracker_jobs.api.responses import json_response
from tracker_jobs.core.errors import TrackerError, error_document

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, document: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return json_response(document, status=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TrackerError as error:
        return error_response(error.status, error.document(), error.headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _HTTP_CODES.get(error.status, "http_error")
        return error_response(error.status, error_document(code, error.reason))
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, error_document("internal_error", "internal error; it has been logged"))
