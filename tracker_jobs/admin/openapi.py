"""GET /api/openapi.json: the admin API described from the app's own router.

Each handler carries its description: decorate it with `@documented(Operation(...))` where it is
written (or `describe(handler, Operation(...))` from outside). The document walks the registered
routes, so paths and methods are never written twice, and `undocumented_routes(app)` lists whatever
a new route forgot. Errors every route can answer (401, 403, 404, 400/413/415, 429) are added from
what the operation declares: its auth, path parameters, query parameters and body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tracker_jobs.admin import devices, health, positions, session, socket
from tracker_jobs.admin.errors import Handler
from tracker_jobs.admin.responses import json_response
from tracker_jobs.core.fields import ID_MAX
from tracker_jobs.positions.batch import REJECTION_CODES

JsonSchema = dict[str, Any]
Auth = Literal["none", "token", "admin", "metrics"]
OPENAPI_PATH = "/api/openapi.json"
_PATH_PARAMETER = re.compile(r"{(\w+)(?::[^}]*)?}")


def nullable(schema: JsonSchema) -> JsonSchema:
    return {**schema, "nullable": True}


def array(items: JsonSchema, **constraints: Any) -> JsonSchema:
    return {"type": "array", "items": items, **constraints}


def obj(properties: dict[str, JsonSchema], required: tuple[str, ...] | None = None, **more: Any) -> JsonSchema:
    """An object schema; every property is required unless `required` says which are."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        **more,
    }


STRING: JsonSchema = {"type": "string"}
INTEGER: JsonSchema = {"type": "integer"}
NUMBER: JsonSchema = {"type": "number"}
BOOLEAN: JsonSchema = {"type": "boolean"}
TIME: JsonSchema = {"type": "string", "format": "date-time"}
ANY_OBJECT: JsonSchema = {"type": "object"}
ID: JsonSchema = {"type": "integer", "minimum": 1, "maximum": ID_MAX}
ERROR = obj({"error": obj({"code": STRING, "message": STRING})})


@dataclass(frozen=True)
class Reply:
    description: str
    schema: JsonSchema | None = None
    media_type: str = "application/json"
    headers: tuple[str, ...] = ()

    def as_openapi(self) -> dict[str, Any]:
        described: dict[str, Any] = {"description": self.description}
        if self.schema is not None:
            described["content"] = {self.media_type: {"schema": self.schema}}
        if self.headers:
            described["headers"] = {name: {"schema": STRING} for name in self.headers}
        return described


def error_reply(description: str, *headers: str) -> Reply:
    return Reply(description, ERROR, headers=headers)


@dataclass(frozen=True)
class Query:
    name: str
    schema: JsonSchema
    description: str = ""
    required: bool = False
    repeated: bool = False  # ?name=a&name=b

    def as_openapi(self) -> dict[str, Any]:
        schema = array(self.schema) if self.repeated else self.schema
        return {
            "name": self.name,
            "in": "query",
            "required": self.required,
            "schema": schema,
            "description": self.description,
            **({"explode": True} if self.repeated else {}),
        }


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: dict[int, Reply]
    auth: Auth = "token"
    query: tuple[Query, ...] = ()
    path: dict[str, JsonSchema] = field(default_factory=dict)  # path parameter schemas; string if not given
    body: JsonSchema | None = None
    body_required: bool = True
    example: Any = None  # a request body that works: documentation, and the auth walk test sends it
    tag: str = ""

    def as_openapi(self, path: str) -> dict[str, Any]:
        names = _PATH_PARAMETER.findall(path)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": self.path.get(name, STRING)} for name in names
        ]
        parameters += [query.as_openapi() for query in self.query]
        described: dict[str, Any] = {
            "summary": self.summary,
            "responses": {str(status): reply.as_openapi() for status, reply in self._all_responses(path).items()},
        }
        if self.tag:
            described["tags"] = [self.tag]
        if parameters:
            described["parameters"] = parameters
        described["security"] = [] if self.auth == "none" else [{"bearer": []}]
        if self.body is not None:
            content: dict[str, Any] = {"schema": self.body}
            if self.example is not None:
                content["example"] = self.example
            described["requestBody"] = {"required": self.body_required, "content": {"application/json": content}}
        return described

    def _all_responses(self, path: str) -> dict[int, Reply]:
        common: dict[int, Reply] = {}
        if path.startswith("/api/"):
            common[429] = error_reply(
                "too many requests for this token (or address, without one); wait Retry-After seconds", "Retry-After"
            )
        if self.auth in ("token", "admin"):
            common[401] = error_reply("no token, or an unknown or expired one", "WWW-Authenticate")
        if self.auth == "metrics":
            common[401] = error_reply("TRACKER_METRICS_TOKEN is set and was not sent")
        if self.auth == "admin":
            common[403] = error_reply("the caller is not an admin")
        if _PATH_PARAMETER.search(path):
            common[404] = error_reply("no such object, or not one of the caller's")
        if self.query or self.body is not None:
            common[400] = error_reply("a parameter or field is malformed; the message names it")
        if self.body is not None:
            common[413] = error_reply("the body is too large")
            common[415] = error_reply("the body is not JSON")
        return {**common, **self.responses}


DOCUMENTED: dict[Handler, Operation] = {}


def describe(handler: Handler, operation: Operation) -> None:
    DOCUMENTED[handler] = operation


def documented(operation: Operation) -> Callable[[Handler], Handler]:
    def attach(handler: Handler) -> Handler:
        describe(handler, operation)
        return handler

    return attach


def documented_routes(app: web.Application) -> list[tuple[web.AbstractRoute, Operation | None]]:
    """Every route a client can call (HEAD twins of GET routes left out), with its description if any."""
    return [(route, DOCUMENTED.get(route.handler)) for route in app.router.routes() if route.method != "HEAD"]


def route_path(route: web.AbstractRoute) -> str:
    return route.resource.canonical if route.resource is not None else ""


def undocumented_routes(app: web.Application) -> list[str]:
    return [f"{route.method} {route_path(route)}" for route, operation in documented_routes(app) if operation is None]


def openapi_document(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route, operation in documented_routes(app):
        if operation is not None:
            path = _PATH_PARAMETER.sub(r"{\1}", route_path(route))
            paths.setdefault(path, {})[route.method.lower()] = operation.as_openapi(path)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tracker_jobs admin API",
            "version": "1",
            "description": 'Devices, positions, jobs, users. Errors are {"error": {"code", "message"}}.',
        },
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


@documented(Operation("This document", {200: Reply("OpenAPI 3.0 document", ANY_OBJECT)}, auth="none", tag="meta"))
async def get_openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app))


def install(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, get_openapi)


# --- The foundation's routes, described here so their modules stay as they are ---

DEVICE = obj(
    {
        "id": INTEGER,
        "name": STRING,
        "uniqueId": STRING,
        "status": STRING,
        "disabled": BOOLEAN,
        "lastUpdate": nullable(TIME),
        "positionId": nullable(INTEGER),
        "speedLimit": nullable(NUMBER),
        "totalDistance": NUMBER,
        "motion": BOOLEAN,
        "attributes": ANY_OBJECT,
    },
    required=("id", "name", "uniqueId", "status", "disabled"),
)
DEVICE_INPUT = obj(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 128},
        "uniqueId": {"type": "string", "minLength": 1, "maxLength": 128},
        "speedLimit": nullable({"type": "number", "exclusiveMinimum": True, "minimum": 0}),
        "disabled": BOOLEAN,
        "attributes": ANY_OBJECT,
    },
    required=(),
)
POSITION = obj(
    {
        "id": nullable(INTEGER),
        "deviceId": INTEGER,
        "fixTime": TIME,
        "serverTime": nullable(TIME),
        "latitude": NUMBER,
        "longitude": NUMBER,
        "altitude": NUMBER,
        "speed": NUMBER,
        "course": NUMBER,
        "accuracy": NUMBER,
        "valid": BOOLEAN,
        "attributes": ANY_OBJECT,
    },
    required=("deviceId", "fixTime", "latitude", "longitude"),
)
QUEUE_HEALTH = obj({"backlog": INTEGER, "oldestWaitingAgeS": nullable(NUMBER), "workers": INTEGER})
HEALTH = obj(
    {
        "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
        "redis": obj({"connected": BOOLEAN}),
        "database": obj({"connected": BOOLEAN}),
        "workers": INTEGER,
        "queues": {"type": "object", "additionalProperties": QUEUE_HEALTH},
        "alerts": array(STRING),
    },
    required=("status", "redis", "database", "workers"),
)

describe(
    health.health,
    Operation(
        "Redis, database, live workers and each queue's backlog; degraded when a queue with jobs has no live "
        "worker or its oldest waiting job is older than TRACKER_BACKLOG_AGE_LIMIT",
        {200: Reply("healthy or degraded", HEALTH), 503: Reply("Redis or the database is unreachable", HEALTH)},
        auth="none",
        tag="health",
    ),
)
describe(
    session.create_session,
    Operation(
        "Log in: a session token that expires after 7 days",
        {
            200: Reply("the session", obj({"token": STRING, "expires": TIME})),
            401: error_reply("wrong email or password"),
        },
        auth="none",
        body=obj({"email": STRING, "password": STRING}),
        example={"email": "admin@localhost", "password": "not-the-password"},
        tag="session",
    ),
)
describe(
    session.delete_session,
    Operation("Log out: end the session whose token is sent", {204: Reply("ended (or there was none)")}, tag="session"),
)
describe(
    devices.list_devices,
    Operation("The devices the caller may see", {200: Reply("devices", array(DEVICE))}, tag="devices"),
)
describe(
    devices.create_device,
    Operation(
        "Register a device (linked to the caller)",
        {201: Reply("the device", DEVICE), 409: error_reply("the uniqueId is taken")},
        body=DEVICE_INPUT,
        example={"name": "Truck 7", "uniqueId": "walk-truck-7"},
        tag="devices",
    ),
)
describe(
    devices.get_device, Operation("One device", {200: Reply("the device", DEVICE)}, path={"id": ID}, tag="devices")
)
describe(
    devices.update_device,
    Operation(
        "Change some of a device's fields",
        {200: Reply("the device", DEVICE), 409: error_reply("the uniqueId is taken")},
        path={"id": ID},
        body=DEVICE_INPUT,
        example={"name": "Truck 7b"},
        tag="devices",
    ),
)
describe(
    devices.delete_device,
    Operation("Delete a device and its positions", {204: Reply("deleted")}, path={"id": ID}, tag="devices"),
)
describe(
    positions.get_positions,
    Operation(
        "Positions of visible devices in a time range, or each one's latest",
        {200: Reply("positions ordered per device by fix time", array(POSITION))},
        query=(
            Query("deviceId", ID, "only these devices", repeated=True),
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
describe(positions.post_positions, _BATCH)
describe(
    positions.post_single_position,
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
describe(
    devices.get_statistics,
    Operation(
        "A device's statistics today (in TRACKER_TIMEZONE) and, with from and to, over that range (31 days at most)",
        {200: Reply("statistics", obj({"today": STATISTICS, "range": STATISTICS}, required=("today",)))},
        path={"id": ID},
        query=(Query("from", TIME), Query("to", TIME)),
        tag="devices",
    ),
)
describe(
    socket.socket_handler,
    Operation(
        "Websocket of live updates (token also as ?token=): {devices} and {positions} on connect, then one message "
        "per stored batch for the devices the caller may see",
        {101: Reply("switching to the websocket protocol"), 400: error_reply("not a websocket request")},
        query=(Query("token", STRING, "the bearer token, for browsers that cannot set headers"),),
        tag="positions",
    ),
)
