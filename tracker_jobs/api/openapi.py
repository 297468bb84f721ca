"""GET /api/openapi.json: the admin API described from the app's own router.

Each handler carries its description: decorate it with `@documented(Operation(...))` where it is
written (or `describe(handler, Operation(...))` from outside). The document walks the registered
routes, so paths and methods are never written twice, and `undocumented_routes(app)` lists whatever
a new route forgot. Errors every route can answer (401, 403, 404, 400/413/415, 429) are added from
what the operation declares: its auth, path parameters, query parameters and body. A JSON body is given
as the pydantic model the handler reads it with (api.bodies), so its check and its schema are one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from tracker_jobs.api.errors import Handler
from tracker_jobs.api.json_schema import JsonSchema as JsonSchema  # the schemas the views write by hand
from tracker_jobs.api.json_schema import openapi_schema
from tracker_jobs.api.params import DEFAULT_PAGE, MAX_OFFSET, MAX_PAGE
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.core.fields import ID_MAX

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
    body: type[BaseModel] | JsonSchema | None = None  # a model (api.bodies.RequestBody) or a hand-written schema
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
            schema = self.body if isinstance(self.body, dict) else openapi_schema(self.body)
            content: dict[str, Any] = {"schema": schema}
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


# The paging parameters of a list endpoint (api.params.page reads them).
PAGE_QUERIES = (
    Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, f"default {DEFAULT_PAGE}"),
    Query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}),
)

ROUTES = [Route("GET", OPENAPI_PATH, get_openapi)]
