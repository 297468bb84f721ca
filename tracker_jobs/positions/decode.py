"""Decode what devices send into one shape; a bad field raises FieldError naming it.

Speed leaves here in knots and times in UTC, whatever the device used. A speed or course the device
did not report stays None (the pipeline derives it), distinct from a reported 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.fields import ID_MAX, check_json, parse_number, parse_time, parse_unique_id
from tracker_jobs.positions.record import PositionRecord

KNOTS_PER = {"kn": 1.0, "kmh": 1 / 1.852, "mps": 3600 / 1852, "mph": 1609.344 / 1852}


class Decoded(NamedTuple):
    """A position as its sender sent it, and who the sender says it is."""

    unique_id: str  # "" when the sender named the device by its id (then `position.device_id`)
    position: PositionRecord


def in_knots(field: str, speed: float, unit: str) -> float:
    knots = speed * KNOTS_PER[unit]
    if not math.isfinite(knots):  # finite in its own unit, too large in knots
        raise FieldError(field, "is out of range")
    return knots


def parse_latitude(field: str, raw: object) -> float:
    value = parse_number(field, raw)
    if not -90.0 <= value <= 90.0:
        raise FieldError(field, f"must be between -90 and 90, got {value}")
    return value


def parse_longitude(field: str, raw: object) -> float:
    value = parse_number(field, raw)
    if not -180.0 <= value <= 180.0:
        raise FieldError(field, f"must be between -180 and 180, got {value}")
    return value


def typed_value(raw: str) -> bool | int | float | str:
    """An attribute as the type it spells: true/false, a whole number, a number, else text."""
    lowered = raw.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    try:
        whole = int(raw)
    except ValueError:
        pass
    else:
        return whole if -(2**63) <= whole < 2**63 else raw  # JSON readers and orjson stop at 64 bits
    try:
        number = float(raw)
    except ValueError:
        return raw
    return number if math.isfinite(number) else raw


# OsmAnd keys with a meaning of their own; every other key is kept in attributes.
_OSMAND_KNOWN = {
    "id",
    "deviceid",
    "lat",
    "lon",
    "location",
    "timestamp",
    "speed",
    "bearing",
    "heading",
    "altitude",
    "accuracy",
    "hdop",
    "batt",
    "charge",
    "valid",
}


def decode_osmand(params: Mapping[str, str], *, now: datetime, speed_unit: str = "kn") -> Decoded:
    """The OsmAnd protocol as Traccar Client, OsmAnd and GPSLogger send it (query string or form body)."""
    unique_id = parse_unique_id("id", params.get("id") or params.get("deviceid") or "")
    if "location" in params and ("lat" not in params or "lon" not in params):
        parts = params["location"].split(",")
        if len(parts) != 2:
            raise FieldError("location", "must be 'latitude,longitude'")
        latitude = parse_latitude("location", parts[0])
        longitude = parse_longitude("location", parts[1])
    else:
        if "lat" not in params:
            raise FieldError("lat", "is required")
        if "lon" not in params:
            raise FieldError("lon", "is required")
        latitude = parse_latitude("lat", params["lat"])
        longitude = parse_longitude("lon", params["lon"])
    timestamp = params.get("timestamp")
    fix_time = parse_time("timestamp", timestamp) if timestamp else now
    position = PositionRecord(fix_time=fix_time.timestamp(), latitude=latitude, longitude=longitude)
    if "speed" in params:
        position.speed = in_knots("speed", parse_number("speed", params["speed"]), speed_unit)
    course_key = "bearing" if "bearing" in params else "heading"
    if course_key in params:
        position.course = parse_number(course_key, params[course_key]) % 360.0
    if "altitude" in params:
        position.altitude = parse_number("altitude", params["altitude"])
    if "accuracy" in params:
        position.accuracy = parse_number("accuracy", params["accuracy"])
    if "valid" in params:
        position.valid = params["valid"].strip().lower() not in {"false", "0", "no"}
    attributes = position.attributes
    if "hdop" in params:
        attributes["hdop"] = parse_number("hdop", params["hdop"])
    if "batt" in params:
        attributes["batteryLevel"] = parse_number("batt", params["batt"])
    if "charge" in params:
        attributes["charge"] = params["charge"].strip().lower() in {"true", "1", "yes"}
    for key, raw in params.items():
        if key not in _OSMAND_KNOWN:
            attributes[key] = typed_value(raw)
    check_json("attributes", attributes)
    return Decoded(unique_id, position)


def _object(field: str, raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise FieldError(field, "must be a JSON object")
    return raw


def _known_number(field: str, raw: object) -> float | None:
    """Traccar Client sends -1 for what it does not know."""
    if raw is None:
        return None
    value = parse_number(field, raw)
    return None if value < 0 else value


def decode_traccar_client_json(body: object, *, now: datetime) -> Decoded:
    """Traccar Client's JSON: {"device_id", "location": {"timestamp", "coords": {...}, "battery": {...}, ...}}.
    Speed arrives in m/s; a negative speed, heading or battery level means "not known"."""
    root = _object("body", body)
    location = _object("location", root.get("location"))
    coords = _object("location.coords", location.get("coords"))
    if "latitude" not in coords:
        raise FieldError("location.coords.latitude", "is required")
    if "longitude" not in coords:
        raise FieldError("location.coords.longitude", "is required")
    timestamp = location.get("timestamp")
    unique_id = parse_unique_id("device_id", root.get("device_id", ""))
    position = PositionRecord(
        fix_time=(parse_time("location.timestamp", timestamp) if timestamp is not None else now).timestamp(),
        latitude=parse_latitude("location.coords.latitude", coords["latitude"]),
        longitude=parse_longitude("location.coords.longitude", coords["longitude"]),
    )
    speed = _known_number("location.coords.speed", coords.get("speed"))
    position.speed = None if speed is None else in_knots("location.coords.speed", speed, "mps")
    heading = _known_number("location.coords.heading", coords.get("heading"))
    position.course = None if heading is None else heading % 360.0
    position.accuracy = _known_number("location.coords.accuracy", coords.get("accuracy")) or 0.0
    if coords.get("altitude") is not None:
        position.altitude = parse_number("location.coords.altitude", coords["altitude"])
    attributes = position.attributes
    if isinstance(location.get("is_moving"), bool):
        attributes["motion"] = location["is_moving"]
    if location.get("odometer") is not None:
        attributes["odometer"] = parse_number("location.odometer", location["odometer"])
    if isinstance(location.get("event"), str):
        attributes["event"] = location["event"]
    battery = location.get("battery")
    if battery is not None:
        battery = _object("location.battery", battery)
        level = _known_number("location.battery.level", battery.get("level"))
        if level is not None:
            if level > 1:
                raise FieldError("location.battery.level", f"must be between 0 and 1, got {level}")
            attributes["batteryLevel"] = round(level * 100)
        if isinstance(battery.get("is_charging"), bool):
            attributes["charge"] = battery["is_charging"]
    activity = location.get("activity")
    if isinstance(activity, dict) and isinstance(activity.get("type"), str):
        attributes["activity"] = activity["type"]
    extras = location.get("extras", root.get("extras"))
    if extras is not None:
        attributes.update(_object("location.extras", extras))
    check_json("attributes", attributes)
    return Decoded(unique_id, position)


def decode_position_object(item: object, *, now: datetime) -> Decoded:
    """The batch API's item, Traccar's position shape: `deviceId` (the device's id) or `uniqueId`,
    `fixTime`, `latitude`, `longitude`, and optionally speed (knots), course, altitude, accuracy,
    valid, attributes."""
    data = _object("position", item)
    if "deviceId" in data:
        device_id = parse_number("deviceId", data["deviceId"])
        if not device_id.is_integer() or not 0 < device_id <= ID_MAX:
            raise FieldError("deviceId", "must be a positive whole number")
        unique_id, internal_id = "", int(device_id)
    elif "uniqueId" in data:
        unique_id, internal_id = parse_unique_id("uniqueId", data["uniqueId"]), 0
    else:
        raise FieldError("deviceId", "is required (or uniqueId)")
    for name in ("latitude", "longitude"):
        if name not in data:
            raise FieldError(name, "is required")
    fix_time = data.get("fixTime", data.get("deviceTime"))
    position = PositionRecord(
        device_id=internal_id,
        fix_time=(now if fix_time is None else parse_time("fixTime", fix_time)).timestamp(),
        latitude=parse_latitude("latitude", data["latitude"]),
        longitude=parse_longitude("longitude", data["longitude"]),
        protocol="api",
    )
    for name in ("speed", "course", "altitude", "accuracy"):
        if data.get(name) is not None:
            setattr(position, name, parse_number(name, data[name]))
    if position.course is not None:
        position.course %= 360.0
    if "valid" in data:
        if not isinstance(data["valid"], bool):
            raise FieldError("valid", "must be true or false")
        position.valid = data["valid"]
    if data.get("attributes") is not None:
        position.attributes = check_json("attributes", dict(_object("attributes", data["attributes"])))
    return Decoded(unique_id, position)
