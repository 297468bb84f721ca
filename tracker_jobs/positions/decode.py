"""Decode what devices send into one shape; a bad field raises FieldError naming it.

Speed leaves here in knots and times in UTC, whatever the device used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

KNOTS_PER = {"kn": 1.0, "kmh": 1 / 1.852, "mps": 3600 / 1852, "mph": 1609.344 / 1852}
MAX_UNIQUE_ID_LENGTH = 128
# Epoch values above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_EPOCH_MS_THRESHOLD = 1e11
_EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class FieldError(ValueError):
    """A field of a device's message is missing or wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(slots=True)
class DecodedPosition:
    unique_id: str
    fix_time: datetime
    latitude: float
    longitude: float
    altitude: float = 0.0
    speed: float = 0.0  # knots
    course: float = 0.0
    accuracy: float = 0.0
    valid: bool = True
    protocol: str = "osmand"
    attributes: dict[str, Any] = field(default_factory=dict)


def parse_number(field: str, raw: object) -> float:
    if isinstance(raw, bool):
        raise FieldError(field, "must be a number")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise FieldError(field, f"must be a number, got {str(raw)[:40]!r}") from None
    if not math.isfinite(value):
        raise FieldError(field, "must be a finite number")
    return value


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


def parse_unique_id(field: str, raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise FieldError(field, "must be a string")
    value = str(raw).strip()
    if not value:
        raise FieldError(field, "is required")
    if len(value) > MAX_UNIQUE_ID_LENGTH or not value.isprintable():
        raise FieldError(field, f"must be at most {MAX_UNIQUE_ID_LENGTH} printable characters")
    return value


def parse_time(field: str, raw: object) -> datetime:
    """Epoch seconds or milliseconds, ISO-8601, or `yyyy-MM-dd HH:mm:ss`; without a zone it is UTC."""
    if (isinstance(raw, int | float) and not isinstance(raw, bool)) or (isinstance(raw, str) and _is_number(raw)):
        epoch = parse_number(field, raw)
        if abs(epoch) > _EPOCH_MS_THRESHOLD:
            epoch /= 1000.0
        try:
            parsed = datetime.fromtimestamp(epoch, UTC)
        except (OverflowError, OSError, ValueError):
            raise FieldError(field, "is out of range") from None
    elif isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise FieldError(field, "must be epoch seconds, epoch milliseconds or ISO-8601") from None
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    else:
        raise FieldError(field, "must be epoch seconds, epoch milliseconds or ISO-8601")
    if not _EARLIEST <= parsed < _LATEST:
        raise FieldError(field, f"is out of range: {parsed.isoformat()}")
    return parsed


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def typed_value(raw: str) -> bool | int | float | str:
    """An attribute as the type it spells: true/false, a whole number, a number, else text."""
    lowered = raw.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        return raw
    return number if math.isfinite(number) else raw


# OsmAnd keys with a meaning of their own; every other key is kept in attributes.
_OSMAND_KNOWN = {
    "id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading",
    "altitude", "accuracy", "hdop", "batt", "charge", "valid",
}  # fmt: skip


def decode_osmand(params: Mapping[str, str], *, now: datetime, speed_unit: str = "kn") -> DecodedPosition:
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
    position = DecodedPosition(unique_id=unique_id, fix_time=fix_time, latitude=latitude, longitude=longitude)
    if "speed" in params:
        position.speed = parse_number("speed", params["speed"]) * KNOTS_PER[speed_unit]
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
    return position
