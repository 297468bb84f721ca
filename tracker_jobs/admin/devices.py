"""/api/devices: list, create, read, update, delete — Traccar's field names, only visible devices."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from tracker_jobs.admin.auth import announce_access_change, principal
from tracker_jobs.admin.params import json_object, path_id, query_time
from tracker_jobs.admin.responses import json_response
from tracker_jobs.admin.state import REDIS, SESSIONS, SETTINGS
from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.core.errors import FieldError, HttpError, not_found
from tracker_jobs.core.fields import check_json, parse_number, parse_text
from tracker_jobs.devices import service
from tracker_jobs.positions.decode import parse_unique_id
from tracker_jobs.positions.live import forget_device
from tracker_jobs.positions.statistics import device_statistics, today_range

MAX_STATISTICS_RANGE = timedelta(days=31)
# What a body may hold: the writable fields, and the read-only ones a client sends back from a GET.
DEVICE_KEYS = {
    "id",
    "name",
    "uniqueId",
    "disabled",
    "speedLimit",
    "attributes",
    "status",
    "lastUpdate",
    "positionId",
    "totalDistance",
    "motion",
}


def device_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The model fields a POST or PUT body sets, checked; unknown keys are refused by name."""
    unknown = sorted(set(body) - DEVICE_KEYS)
    if unknown:
        raise FieldError(unknown[0][:40], "is not a device field")
    try:
        return _checked_device_fields(body, creating=creating)
    except FieldError as error:
        raise FieldError(error.field, error.problem) from None


def _checked_device_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if creating or "uniqueId" in body:
        fields["unique_id"] = parse_unique_id("uniqueId", body.get("uniqueId", ""))
    if creating or "name" in body:
        fields["name"] = parse_text("name", body.get("name", fields.get("unique_id")), 128)
    if "disabled" in body:
        if not isinstance(body["disabled"], bool):
            raise FieldError("disabled", "must be true or false")
        fields["disabled"] = body["disabled"]
    if "speedLimit" in body:
        limit = body["speedLimit"]
        fields["speed_limit"] = None if limit is None else parse_number("speedLimit", limit)
        if fields["speed_limit"] is not None and fields["speed_limit"] <= 0:
            raise FieldError("speedLimit", "must be a positive speed in knots")
    if "attributes" in body:
        if not isinstance(body["attributes"], dict):
            raise FieldError("attributes", "must be a JSON object")
        fields["attributes"] = check_json("attributes", body["attributes"])
    return fields


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
    fields = device_fields(await json_object(request), creating=True)
    async with transaction(request.app[SESSIONS]) as session:
        if await service.unique_id_taken(session, fields["unique_id"]):
            raise HttpError(409, "conflict", f"uniqueId: {fields['unique_id']!r} is already registered")
        device = await service.create_device(session, principal(request), fields)
    assert device.id is not None
    await announce_access_change(request, devices=[device.id])  # a socket that may see it shows it at once
    return json_response(service.device_to_api(device), status=201)


async def update_device(request: web.Request) -> web.Response:
    device_id = path_id(request)
    fields = device_fields(await json_object(request), creating=False)
    async with transaction(request.app[SESSIONS]) as session:
        device = await service.get_device(session, principal(request), device_id)
        if device is None:
            raise not_found(f"device {device_id}")
        if "unique_id" in fields and await service.unique_id_taken(session, fields["unique_id"], except_id=device_id):
            raise HttpError(409, "conflict", f"uniqueId: {fields['unique_id']!r} is already registered")
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
    await forget_device(request.app[REDIS], device_id)
    return web.Response(status=204)


async def get_statistics(request: web.Request) -> web.Response:
    """Today's statistics (in the configured time zone), and those of ?from=&to= when given."""
    device_id = path_id(request)
    start, end = query_time(request, "from"), query_time(request, "to")
    settings = request.app[SETTINGS]
    if (start is None) != (end is None):
        raise FieldError("to" if end is None else "from", "from and to go together")
    if start is not None and end is not None:
        if start > end:
            raise FieldError("from", "must not be after to")
        if end - start > MAX_STATISTICS_RANGE:
            raise FieldError("to", f"the range may span at most {MAX_STATISTICS_RANGE.days} days")
    async with request.app[SESSIONS]() as session:
        if await service.get_device(session, principal(request), device_id) is None:
            raise not_found(f"device {device_id}")
        redis, motion = request.app[REDIS], settings.motion_speed_kn
        body = {
            "today": await device_statistics(
                session, redis, device_id, *today_range(utcnow(), settings.timezone), motion
            )
        }
        if start is not None and end is not None:
            body["range"] = await device_statistics(session, redis, device_id, start, end, motion)
    return json_response(body)
