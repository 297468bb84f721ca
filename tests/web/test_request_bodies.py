"""Request bodies read into pydantic models (api.bodies): every problem is a 400 naming the field, and
the OpenAPI document shows each body's model, converted to what OpenAPI 3.0 allows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from annotated_types import MinLen
from arq.connections import ArqRedis
from pydantic import StrictBool
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.client import error_of
from tests.support.factories import Users, add_device
from tests.support.services import make_settings
from tracker_jobs.api.bodies import RequestBody, read_body
from tracker_jobs.api.body_fields import Id, Omittable, OneOf, Text, Time
from tracker_jobs.api.errors import json_errors
from tracker_jobs.api.json_schema import openapi_schema
from tracker_jobs.api.openapi import openapi_document
from tracker_jobs.core.db import create_engine
from tracker_jobs.devices.schemas import NewDevice
from tracker_jobs.reports.schemas import NewFleetReport
from tracker_jobs.web.app import create_admin_app

Client = TestClient[Any, Any]


class Probe(RequestBody):
    subject = "probe"
    name: Annotated[str, Text(16)]
    device_id: Id = 1
    at: Omittable[Time] = None
    colour: Annotated[str, OneOf(("red", "green"))] = "red"
    loud: StrictBool = False
    note: Omittable[Annotated[str, Text(16)]] = None
    tags: Annotated[list[Annotated[str, Text(8)]], MinLen(1)] = ["untagged"]  # noqa: RUF012  # pydantic copies it


async def given(request: web.Request) -> web.Response:
    body = await read_body(request, Probe)
    return web.json_response({"given": sorted(body.given()), "name": body.name})


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/probe", given)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x", "shade": "red"}, "shade: is not a probe field; expected name, device_id, at, colour"),
        ({"name": 5}, "name: must be text"),
        ({"name": "x", "device_id": "van"}, "device_id: must be a whole number, got 'van'"),
        ({"name": "x", "device_id": 2**40}, "device_id: must be from 1 to 2147483647"),
        ({"name": "x", "loud": "true"}, "loud: must be true or false"),
        ({"name": "x", "colour": "blue"}, "colour: expected one of red, green, got 'blue'"),
        ({"name": "x", "at": "yesterday"}, "at: must be epoch seconds, epoch milliseconds or ISO-8601"),
        ({"name": "x", "note": None}, "note: must be text"),  # may be left out, never null
        ({"name": "x", "tags": "a"}, "tags: must be a list"),
        ({"name": "x", "tags": ["ok", 5]}, "tags.1: must be text"),
        ({"name": "x", "tags": []}, "tags: must not be empty"),
        ({}, "name: is required"),
        ({"name": "   "}, "name: is required"),
        ({"name": "x" * 17}, "name: must be at most 16 characters"),
        ({"name": "a\u0000b"}, "name: must not contain NUL characters"),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_field(client: Client, body: dict[str, Any], message: str) -> None:
    response = await client.post("/probe", json=body)
    assert response.status == 400
    error = await error_of(response)
    assert error["code"] == "invalid_field"
    assert error["message"].startswith(message), error


async def test_an_unknown_key_is_named_before_any_other_problem_and_bounded(client: Client) -> None:
    response = await client.post("/probe", json={"name": 5, "k" * 1000: 1})
    assert (await error_of(response))["message"].startswith("k" * 40 + ": is not a probe field")


async def test_no_message_echoes_much_of_the_input(client: Client) -> None:
    for body in ({"name": "x", "device_id": "v" * 10_000}, {"name": "x", "colour": "b" * 10_000}):
        message = (await error_of(await client.post("/probe", json=body)))["message"]
        assert len(message) < 120, message


async def test_a_body_that_is_not_an_object_is_refused(client: Client) -> None:
    response = await client.post("/probe", json=[{"name": "x"}])
    assert response.status == 400
    assert await error_of(response) == {"code": "invalid_json", "message": "the body must be a JSON object"}


async def test_given_holds_what_was_sent_and_the_defaults_but_no_left_out_field(client: Client) -> None:
    response = await client.post("/probe", json={"name": "  padded  ", "loud": True})
    assert response.status == 200
    assert await response.json() == {"given": ["colour", "device_id", "loud", "name", "tags"], "name": "padded"}


@pytest.fixture
async def document(tmp_path: Path, redis_url: str, redis: ArqRedis) -> AsyncIterator[dict[str, Any]]:
    settings = make_settings(f"sqlite:///{tmp_path / 'unused.db'}", redis_url)
    engine = create_engine(settings.database_url)
    yield openapi_document(create_admin_app(settings, redis, engine))
    await engine.dispose()


def request_schema(document: dict[str, Any], path: str, method: str) -> Any:
    return document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def test_the_document_shows_each_body_model_as_openapi_3_0(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.0.")
    assert request_schema(document, "/api/devices", "post") == openapi_schema(NewDevice)
    fleet = request_schema(document, "/api/tasks/report/fleet", "post")
    assert fleet == openapi_schema(NewFleetReport)
    assert fleet["required"] == ["start", "end"]
    assert fleet["additionalProperties"] is False
    # Pydantic's `anyOf [..., {"type": "null"}]` is OpenAPI 3.0's `nullable`; `$defs` are inlined.
    assert fleet["properties"]["device_ids"] == {
        "type": "array",
        "items": {"type": "integer", "minimum": 1, "maximum": 2147483647},
        "minItems": 1,
        "nullable": True,
        "default": None,
        "description": "null or left out: every device the caller may see",
    }
    speed = request_schema(document, "/api/devices/{id}", "put")["properties"]["speedLimit"]
    assert (speed["minimum"], speed["exclusiveMinimum"], speed["nullable"]) == (0, True, True)
    assert not list(draft_2020_keywords(document))


def draft_2020_keywords(node: Any) -> Iterator[str]:
    """Whatever JSON Schema 2020-12 writes that OpenAPI 3.0 does not have."""
    if isinstance(node, list):
        for item in node:
            yield from draft_2020_keywords(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$defs", "const", "prefixItems") or value == {"type": "null"}:
                yield key
            if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
                yield key
            yield from draft_2020_keywords(value)


async def test_a_put_changes_only_what_it_names_and_null_only_where_null_means_none(
    admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession], users: Users
) -> None:
    device = await add_device(sessions, "put-me")
    path = f"/api/devices/{device}"
    limited = await admin_client.put(path, json={"speedLimit": 50, "status": "online", "id": 0}, headers=admin_headers)
    assert (await limited.json())["speedLimit"] == 50  # the read-only fields a GET gives are ignored
    cleared = await admin_client.put(path, json={"speedLimit": None}, headers=admin_headers)
    assert (await cleared.json())["speedLimit"] is None
    assert (await cleared.json())["name"] == "put-me"
    refused = await admin_client.put(f"/api/users/{users.user}", json={"name": None}, headers=admin_headers)
    assert refused.status == 400
    assert (await error_of(refused))["message"] == "name: must be text"


async def test_a_token_body_may_be_left_out_and_a_login_ignores_keys_it_does_not_know(
    admin_client: Client, admin_headers: dict[str, str], users: Users
) -> None:
    made = await admin_client.post(f"/api/users/{users.user}/tokens", headers=admin_headers)
    assert made.status == 201
    assert (await made.json())["name"] == "api"
    login = {"email": "user@example.com", "password": "user password", "remember": True}
    assert (await admin_client.post("/api/session", json=login)).status == 200
