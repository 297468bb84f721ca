"""/api/commands: the command types a device's transport carries, saved commands, sending (queued for
the device's next OsmAnd reply or its gateway), the queue, one command, cancel, and a gateway's result."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from tracker_jobs.api.access import principal
from tracker_jobs.api.bodies import read_body
from tracker_jobs.api.keys import REDIS, SESSIONS, SETTINGS
from tracker_jobs.api.openapi import (
    ANY_OBJECT,
    ID,
    INTEGER,
    STRING,
    TIME,
    Operation,
    Query,
    Reply,
    array,
    describe,
    error_reply,
    nullable,
    obj,
)
from tracker_jobs.api.params import bounded_query_int, path_id, query_id
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.commands import service
from tracker_jobs.commands.models import SavedCommand, State
from tracker_jobs.commands.schemas import CommandResult, NewSavedCommand, SavedCommandChanges, SendCommand
from tracker_jobs.commands.types import transport_of, types_for
from tracker_jobs.core.db import transaction
from tracker_jobs.core.errors import FieldError
from tracker_jobs.events.outbox import enqueue_deliveries

STATES = tuple(State)


async def list_types(request: web.Request) -> web.Response:
    device_id = query_id(request, "deviceId")
    transport = None
    if device_id is not None:
        async with request.app[SESSIONS]() as session:
            transport = transport_of((await service.device_of(session, principal(request), device_id)).attributes or {})
    return json_response([command.to_api() for command in types_for(transport)])


async def send_command(request: web.Request) -> web.Response:
    fields = (await read_body(request, SendCommand)).given()
    device_ids = fields.get("deviceIds") or ([fields["deviceId"]] if fields.get("deviceId") else [])
    if not device_ids:
        raise FieldError("deviceId", "is required (or deviceIds)")
    settings = request.app[SETTINGS]
    async with transaction(request.app[SESSIONS]) as session:
        commands = await service.send(
            session, principal(request), datetime.now(UTC), settings.command_ttl_s, device_ids=device_ids, fields=fields
        )
    await service.hand_over(request.app[SESSIONS], request.app[REDIS], commands)
    shown = [service.command_to_api(command) for command in commands]
    return json_response(shown if "deviceIds" in fields else shown[0], status=202)


async def list_queue(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise FieldError("state", f"expected one of {', '.join(STATES)}, got {state[:40]!r}")
    limit = bounded_query_int(request, "limit", 100, 1, 1000)
    async with request.app[SESSIONS]() as session:
        commands = await service.list_commands(session, principal(request), query_id(request, "deviceId"), state, limit)
    return json_response([service.command_to_api(command) for command in commands])


async def get_command(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        command = await service.get_command(session, principal(request), path_id(request))
    return json_response(service.command_to_api(command))


async def cancel_command(request: web.Request) -> web.Response:
    command_id = path_id(request)
    async with transaction(request.app[SESSIONS]) as session:
        command = await service.cancel(session, request.app[REDIS], principal(request), command_id)
        shown = service.command_to_api(command)
    return json_response(shown)


async def report_result(request: web.Request) -> web.Response:
    command_id = path_id(request)
    body = await read_body(request, CommandResult)
    settings = request.app[SETTINGS]
    async with transaction(request.app[SESSIONS]) as session:
        command, deliveries = await service.answer(
            session, principal(request), command_id, body.result, datetime.now(UTC), settings.notify_max_age_s
        )
        shown = service.command_to_api(command)
    await enqueue_deliveries(request.app[REDIS], deliveries)
    return json_response(shown)


async def list_saved(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        saved = await service.list_saved(session, principal(request))
    return json_response([service.saved_to_api(item) for item in saved])


async def get_saved(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        saved = await service.get_saved(session, principal(request), path_id(request))
    return json_response(service.saved_to_api(saved))


async def create_saved(request: web.Request) -> web.Response:
    fields = (await read_body(request, NewSavedCommand)).given()
    service.check_saved(fields)
    async with transaction(request.app[SESSIONS]) as session:
        await service.check_may_save(session, principal(request))
        saved = SavedCommand(user_id=principal(request).user_id, **fields)
        session.add(saved)
        await session.flush()
        shown = service.saved_to_api(saved)
    return json_response(shown, status=201)


async def update_saved(request: web.Request) -> web.Response:
    saved_id = path_id(request)
    fields = (await read_body(request, SavedCommandChanges)).given()
    async with transaction(request.app[SESSIONS]) as session:
        saved = await service.saved_to_change(session, principal(request), saved_id)
        for key, value in fields.items():
            setattr(saved, key, value)
        service.check_saved({"type": saved.type, "attributes": saved.attributes})
        shown = service.saved_to_api(saved)
    return json_response(shown)


async def delete_saved(request: web.Request) -> web.Response:
    saved_id = path_id(request)
    async with transaction(request.app[SESSIONS]) as session:
        await session.delete(await service.saved_to_change(session, principal(request), saved_id))
    return web.Response(status=204)


COMMAND = obj(
    {
        "id": INTEGER,
        "deviceId": INTEGER,
        "userId": nullable(INTEGER),
        "type": STRING,
        "attributes": ANY_OBJECT,
        "description": STRING,
        "transport": {"type": "string", "enum": ["osmand", "gateway"]},
        "state": {"type": "string", "enum": list(STATES)},
        "createdAt": TIME,
        "expiresAt": TIME,
        "sentAt": nullable(TIME),
        "answeredAt": nullable(TIME),
        "finishedAt": nullable(TIME),
        "result": nullable(STRING),
        "attempts": INTEGER,
        "error": nullable(STRING),
    }
)
SAVED = obj({"id": INTEGER, "userId": INTEGER, "description": STRING, "type": STRING, "attributes": ANY_OBJECT})
COMMAND_TYPE = obj(
    {"type": STRING, "description": STRING, "attributes": array(ANY_OBJECT), "transports": array(STRING)}
)
NOT_VISIBLE = error_reply("the device (or command) is not one the caller may see")
TAG = "commands"

describe(
    list_types,
    Operation(
        "The command types (with the device's: those its transport carries)",
        {200: Reply("types", array(COMMAND_TYPE)), 404: NOT_VISIBLE},
        query=(Query("deviceId", ID, "only what this device's transport carries"),),
        tag=TAG,
    ),
)
describe(
    send_command,
    Operation(
        "Queue a command for a device (or each of deviceIds): its next OsmAnd reply carries it, or its gateway"
        " (attribute commandGateway) is sent it; it expires at expiresAt (default now + TRACKER_COMMAND_TTL)",
        {
            202: Reply("the queued command (a list for deviceIds)", COMMAND),
            400: error_reply("an unknown type, one the transport cannot carry, a missing attribute, a past expiry"),
            403: error_reply("a user limited to saved commands (limitCommands) sent another"),
            404: NOT_VISIBLE,
            503: error_reply("Redis out of reach: the command could not be queued"),
        },
        body=SendCommand,
        example={"deviceId": 1, "type": "positionPeriodic", "attributes": {"frequency": 30}},
        tag=TAG,
    ),
)
describe(
    list_queue,
    Operation(
        "Commands of the devices the caller may see, newest first",
        {200: Reply("commands", array(COMMAND))},
        query=(
            Query("deviceId", ID, "only this device's"),
            Query("state", {"type": "string", "enum": list(STATES)}, "only in this state"),
            Query("limit", INTEGER, "at most this many (default 100, at most 1000)"),
        ),
        tag=TAG,
    ),
)
describe(
    get_command,
    Operation("One command", {200: Reply("the command", COMMAND), 404: NOT_VISIBLE}, path={"id": ID}, tag=TAG),
)
describe(
    cancel_command,
    Operation(
        "Cancel a queued command",
        {
            200: Reply("the cancelled command", COMMAND),
            404: NOT_VISIBLE,
            409: error_reply("it was sent already, or ended"),
        },
        path={"id": ID},
        tag=TAG,
    ),
)
describe(
    report_result,
    Operation(
        "The device's result of a command (a gateway reports it): the command answered, a commandResult event",
        {200: Reply("the answered command", COMMAND), 404: NOT_VISIBLE, 409: error_reply("the command has ended")},
        path={"id": ID},
        body=CommandResult,
        example={"result": "OK"},
        tag=TAG,
    ),
)
describe(
    list_saved,
    Operation(
        "Saved commands: the caller's own and those an admin saved (an admin's: all)",
        {200: Reply("saved", array(SAVED))},
        tag=TAG,
    ),
)
describe(get_saved, Operation("One saved command", {200: Reply("it", SAVED)}, path={"id": ID}, tag=TAG))
describe(
    create_saved,
    Operation(
        "Save a command to send again (an admin's are offered to every user)",
        {201: Reply("it", SAVED), 403: error_reply("a user limited to saved commands (limitCommands)")},
        body=NewSavedCommand,
        example={"description": "Every 30 s", "type": "positionPeriodic", "attributes": {"frequency": 30}},
        tag=TAG,
    ),
)
describe(
    update_saved,
    Operation(
        "Change a saved command (the caller's own; an admin's: any)",
        {200: Reply("it", SAVED), 403: error_reply("an admin's saved command, or a user limited to saved commands")},
        path={"id": ID},
        body=SavedCommandChanges,
        example={"description": "Every 30 seconds"},
        tag=TAG,
    ),
)
describe(
    delete_saved,
    Operation(
        "Delete a saved command (the caller's own; an admin's: any)",
        {204: Reply("deleted"), 403: error_reply("an admin's saved command, or a user limited to saved commands")},
        path={"id": ID},
        tag=TAG,
    ),
)

ROUTES = [
    Route("GET", "/api/commands/types", list_types),
    Route("GET", "/api/commands/saved", list_saved),
    Route("POST", "/api/commands/saved", create_saved),
    Route("GET", "/api/commands/saved/{id}", get_saved),
    Route("PUT", "/api/commands/saved/{id}", update_saved),
    Route("DELETE", "/api/commands/saved/{id}", delete_saved),
    Route("POST", "/api/commands/send", send_command),
    Route("GET", "/api/commands/queue", list_queue),
    Route("GET", "/api/commands/{id}", get_command),
    Route("DELETE", "/api/commands/{id}", cancel_command),
    Route("POST", "/api/commands/{id}/result", report_result),
]
