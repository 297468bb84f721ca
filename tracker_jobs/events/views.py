"""/api/geofences (the caller's: create, list, read, change, delete), /api/maintenance and
/api/permissions (link a device with a geofence, a notification or a maintenance item, as Traccar's
permissions do) — Traccar's field names."""

from __future__ import annotations

from aiohttp import web

from tracker_jobs.api.access import principal
from tracker_jobs.api.bodies import read_body
from tracker_jobs.api.keys import SESSIONS
from tracker_jobs.api.openapi import (
    ANY_OBJECT,
    ID,
    INTEGER,
    NUMBER,
    PAGE_QUERIES,
    STRING,
    TIME,
    Operation,
    Query,
    Reply,
    array,
    describe,
    documented,
    error_reply,
    nullable,
    obj,
)
from tracker_jobs.api.params import page, path_id, query_ids
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.core.db import transaction
from tracker_jobs.core.errors import FieldError
from tracker_jobs.events import service
from tracker_jobs.events.schemas import GeofenceChanges, MaintenanceChanges, NewGeofence, NewMaintenance, Permission
from tracker_jobs.events.types import EVENT_TYPES


async def list_geofences(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        geofences = await service.list_geofences(session, principal(request))
    return json_response([service.geofence_to_api(geofence) for geofence in geofences])


async def get_geofence(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        geofence = await service.get_geofence(session, principal(request), path_id(request))
    return json_response(service.geofence_to_api(geofence))


async def create_geofence(request: web.Request) -> web.Response:
    fields = (await read_body(request, NewGeofence)).given()
    async with transaction(request.app[SESSIONS]) as session:
        geofence = await service.create_geofence(session, principal(request), fields)
    return json_response(service.geofence_to_api(geofence), status=201)


async def update_geofence(request: web.Request) -> web.Response:
    geofence_id = path_id(request)
    fields = (await read_body(request, GeofenceChanges)).given()
    async with transaction(request.app[SESSIONS]) as session:
        geofence = await service.get_geofence(session, principal(request), geofence_id)
        await service.update_geofence(session, geofence, fields)
    return json_response(service.geofence_to_api(geofence))


async def delete_geofence(request: web.Request) -> web.Response:
    geofence_id = path_id(request)
    async with transaction(request.app[SESSIONS]) as session:
        await session.delete(await service.get_geofence(session, principal(request), geofence_id))
    return web.Response(status=204)


async def list_maintenance(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        items = await service.list_maintenance(session, principal(request))
    return json_response([service.maintenance_to_api(item) for item in items])


async def create_maintenance(request: web.Request) -> web.Response:
    fields = (await read_body(request, NewMaintenance)).given()
    async with transaction(request.app[SESSIONS]) as session:
        item = await service.create_maintenance(session, principal(request), fields)
    return json_response(service.maintenance_to_api(item), status=201)


async def update_maintenance(request: web.Request) -> web.Response:
    item_id = path_id(request)
    fields = (await read_body(request, MaintenanceChanges)).given()
    async with transaction(request.app[SESSIONS]) as session:
        item = service.update_maintenance(await service.get_maintenance(session, principal(request), item_id), fields)
    return json_response(service.maintenance_to_api(item))


async def delete_maintenance(request: web.Request) -> web.Response:
    item_id = path_id(request)
    async with transaction(request.app[SESSIONS]) as session:
        await session.delete(await service.get_maintenance(session, principal(request), item_id))
    return web.Response(status=204)


async def get_event(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        event = await service.get_event(session, principal(request), path_id(request))
    return json_response(service.event_to_api(event))


async def add_permission(request: web.Request) -> web.Response:
    body = await read_body(request, Permission)
    async with transaction(request.app[SESSIONS]) as session:
        await service.link(session, principal(request), body.given())
    return web.Response(status=204)


async def remove_permission(request: web.Request) -> web.Response:
    body = await read_body(request, Permission)
    async with transaction(request.app[SESSIONS]) as session:
        await service.unlink(session, principal(request), body.given())
    return web.Response(status=204)


GEOFENCE = obj({"id": INTEGER, "name": STRING, "description": STRING, "area": STRING, "attributes": ANY_OBJECT})
EXAMPLE = {"name": "Depot", "area": "CIRCLE (52.52 13.405, 150)"}

describe(
    list_geofences,
    Operation("The geofences the caller may see", {200: Reply("geofences", array(GEOFENCE))}, tag="geofences"),
)
describe(
    create_geofence,
    Operation(
        "Create a geofence (the caller's)",
        {201: Reply("the geofence", GEOFENCE)},
        body=NewGeofence,
        example=EXAMPLE,
        tag="geofences",
    ),
)
describe(
    get_geofence, Operation("One geofence", {200: Reply("the geofence", GEOFENCE)}, path={"id": ID}, tag="geofences")
)
describe(
    update_geofence,
    Operation(
        "Change some of a geofence's fields",
        {200: Reply("the geofence", GEOFENCE)},
        path={"id": ID},
        body=GeofenceChanges,
        example={"name": "Depot north"},
        tag="geofences",
    ),
)
describe(delete_geofence, Operation("Delete a geofence", {204: Reply("deleted")}, path={"id": ID}, tag="geofences"))
for handler, summary in (
    (
        add_permission,
        "Link a device (or, for an admin, a user) with a geofence or a notification, or a device with a"
        " maintenance item: a device's positions are checked against its geofences, its events go to its"
        " notifications and its maintenance items apply to it",
    ),
    (remove_permission, "Undo such a link"),
):
    describe(
        handler,
        Operation(
            summary,
            {
                204: Reply("done"),
                403: error_reply("a user linked by someone not an admin"),
                400: error_reply(
                    "not exactly one of each side; a user with a maintenance item; unlinking an item from the"
                    " device it was created for"
                ),
                404: error_reply("the device, user, geofence, notification or item is not one the caller may see"),
            },
            body=Permission,
            example={"deviceId": 1, "geofenceId": 1},
            tag="geofences",
        ),
    )

EVENT = obj(
    {
        "id": INTEGER,
        "type": STRING,
        "eventTime": TIME,
        "deviceId": INTEGER,
        "positionId": nullable(INTEGER),
        "geofenceId": nullable(INTEGER),
        "maintenanceId": nullable(INTEGER),
        "latitude": nullable(NUMBER),
        "longitude": nullable(NUMBER),
        "attributes": ANY_OBJECT,
    },
    required=("id", "type", "eventTime", "deviceId"),
)
describe(
    get_event,
    Operation(
        "One event about a device the caller may see", {200: Reply("the event", EVENT)}, path={"id": ID}, tag="events"
    ),
)


@documented(
    Operation(
        "Events about the devices the caller may see, newest first",
        {200: Reply("events", array(EVENT))},
        query=(
            Query("deviceId", ID, "only these devices'", repeated=True),
            Query("type", {"type": "string", "enum": list(EVENT_TYPES)}, "only these types", repeated=True),
            *PAGE_QUERIES,
        ),
        tag="events",
    )
)
async def list_events(request: web.Request) -> web.Response:
    types = request.query.getall("type", [])
    for kind in types:
        if kind not in EVENT_TYPES:
            raise FieldError("type", f"must be an event type (GET /api/notifications/types), got {kind[:40]!r}")
    limit, offset = page(request)
    async with request.app[SESSIONS]() as session:
        events = await service.recent_events(
            session, principal(request), query_ids(request, "deviceId"), types, limit, offset
        )
    return json_response([service.event_to_api(event) for event in events])


MAINTENANCE = obj(
    {
        "id": INTEGER,
        "deviceId": INTEGER,
        "name": STRING,
        "type": STRING,
        "start": NUMBER,
        "period": NUMBER,
        "attributes": ANY_OBJECT,
    }
)
describe(
    list_maintenance,
    Operation(
        "Maintenance items of the devices the caller may see", {200: Reply("items", array(MAINTENANCE))}, tag="events"
    ),
)
describe(
    create_maintenance,
    Operation(
        "A maintenance item for one of the caller's devices",
        {201: Reply("the item", MAINTENANCE), 404: error_reply("the device is not one the caller may see")},
        body=NewMaintenance,
        example={"deviceId": 1, "name": "Oil", "type": "totalDistance", "start": 0, "period": 10000},
        tag="events",
    ),
)
describe(
    update_maintenance,
    Operation(
        "Change some of an item's fields",
        {200: Reply("the item", MAINTENANCE)},
        path={"id": ID},
        body=MaintenanceChanges,
        example={"period": 15000},
        tag="events",
    ),
)
describe(delete_maintenance, Operation("Delete an item", {204: Reply("deleted")}, path={"id": ID}, tag="events"))

ROUTES = [
    Route("GET", "/api/maintenance", list_maintenance),
    Route("POST", "/api/maintenance", create_maintenance),
    Route("PUT", "/api/maintenance/{id}", update_maintenance),
    Route("DELETE", "/api/maintenance/{id}", delete_maintenance),
    Route("GET", "/api/events", list_events),
    Route("GET", "/api/events/{id}", get_event),
    Route("GET", "/api/geofences", list_geofences),
    Route("POST", "/api/geofences", create_geofence),
    Route("GET", "/api/geofences/{id}", get_geofence),
    Route("PUT", "/api/geofences/{id}", update_geofence),
    Route("DELETE", "/api/geofences/{id}", delete_geofence),
    Route("POST", "/api/permissions", add_permission),
    Route("DELETE", "/api/permissions", remove_permission),
]
