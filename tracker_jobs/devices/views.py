"""/api/devices: list, create, read, update, delete — Traccar's field names, only visible devices."""

from __future__ import annotations

from aiohttp import web

from tracker_jobs.api.access import announce_access_change, principal
from tracker_jobs.api.bodies import read_body
from tracker_jobs.api.keys import REDIS, SESSIONS
from tracker_jobs.api.openapi import (
    ANY_OBJECT,
    BOOLEAN,
    ID,
    INTEGER,
    NUMBER,
    STRING,
    TIME,
    Operation,
    Reply,
    array,
    describe,
    error_reply,
    nullable,
    obj,
)
from tracker_jobs.api.params import path_id
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.core.db import transaction
from tracker_jobs.core.errors import HttpError, not_found
from tracker_jobs.devices import service
from tracker_jobs.devices.schemas import DeviceChanges, NewDevice


async def list_devices(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        devices = await service.list_devices(session, principal(request))
    return json_response([service.device_to_api(device) for device in devices])


async def get_device(request: web.Request) -> web.Response:
    device_id = path_id(request)
    async with request.app[SESSIONS]() as session:
        device = await service.get_device(session, principal(request), device_id)
    if device is None:
        raise not_found(f"device {device_id}")
    return json_response(service.device_to_api(device))


async def create_device(request: web.Request) -> web.Response:
    fields = (await read_body(request, NewDevice)).given()
    if "attributes" in fields:
        fields["attributes"] = service.checked_attributes(principal(request), {}, fields["attributes"])
    async with transaction(request.app[SESSIONS]) as session:
        if await service.unique_id_taken(session, fields["unique_id"]):
            raise HttpError(409, "conflict", f"uniqueId: {fields['unique_id']!r} is already registered")
        device = await service.create_device(session, principal(request), fields)
    assert device.id is not None
    await announce_access_change(request, devices=[device.id])  # a socket that may see it shows it at once
    return json_response(service.device_to_api(device), status=201)


async def update_device(request: web.Request) -> web.Response:
    device_id = path_id(request)
    fields = (await read_body(request, DeviceChanges)).given()
    async with transaction(request.app[SESSIONS]) as session:
        device = await service.get_device(session, principal(request), device_id)
        if device is None:
            raise not_found(f"device {device_id}")
        if "unique_id" in fields and await service.unique_id_taken(session, fields["unique_id"], except_id=device_id):
            raise HttpError(409, "conflict", f"uniqueId: {fields['unique_id']!r} is already registered")
        if "attributes" in fields:
            fields["attributes"] = service.checked_attributes(
                principal(request), device.attributes or {}, fields["attributes"]
            )
        changes_access = any(getattr(device, key) != fields[key] for key in ("unique_id", "disabled") if key in fields)
        for key, value in fields.items():
            setattr(device, key, value)
    if changes_access:
        await announce_access_change(request, devices=[device_id])
    return json_response(service.device_to_api(device))


async def delete_device(request: web.Request) -> web.Response:
    device_id = path_id(request)
    async with transaction(request.app[SESSIONS]) as session:
        device = await service.get_device(session, principal(request), device_id)
        if device is None:
            raise not_found(f"device {device_id}")
        await session.delete(device)
    await announce_access_change(request, devices=[device_id])
    await service.forget_device_state(request.app[REDIS], device_id)
    return web.Response(status=204)


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

describe(
    list_devices,
    Operation("The devices the caller may see", {200: Reply("devices", array(DEVICE))}, tag="devices"),
)

describe(
    create_device,
    Operation(
        "Register a device (linked to the caller)",
        {201: Reply("the device", DEVICE), 409: error_reply("the uniqueId is taken")},
        body=NewDevice,
        example={"name": "Truck 7", "uniqueId": "walk-truck-7"},
        tag="devices",
    ),
)

describe(get_device, Operation("One device", {200: Reply("the device", DEVICE)}, path={"id": ID}, tag="devices"))

describe(
    update_device,
    Operation(
        "Change some of a device's fields",
        {200: Reply("the device", DEVICE), 409: error_reply("the uniqueId is taken")},
        path={"id": ID},
        body=DeviceChanges,
        example={"name": "Truck 7b"},
        tag="devices",
    ),
)

describe(
    delete_device,
    Operation("Delete a device and its positions", {204: Reply("deleted")}, path={"id": ID}, tag="devices"),
)


ROUTES = [
    Route("GET", "/api/devices", list_devices),
    Route("POST", "/api/devices", create_device),
    Route("GET", "/api/devices/{id}", get_device),
    Route("PUT", "/api/devices/{id}", update_device),
    Route("DELETE", "/api/devices/{id}", delete_device),
]
