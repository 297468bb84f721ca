"""The sections reports are made of: their columns in Traccar's names and types, and rows as plain values.

Speed in knots, distance in metres, durations and engine hours in milliseconds (as Traccar), times UTC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.engine import Row

from tracker_jobs.events.models import Event
from tracker_jobs.positions.record import PositionRecord

RowChunks = AsyncIterator[Sequence[dict[str, Any]]]


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # int, float, text, bool, time, json


def _columns(spec: str) -> tuple[Column, ...]:
    """`name:type` pairs separated by spaces."""
    return tuple(Column(*item.split(":")) for item in spec.split())


SECTION_COLUMNS: dict[str, tuple[Column, ...]] = {
    "route": _columns(
        "id:int deviceId:int protocol:text fixTime:time serverTime:time valid:bool latitude:float longitude:float "
        "altitude:float speed:float course:float accuracy:float attributes:json"
    ),
    "trips": _columns(
        "deviceId:int deviceName:text startTime:time endTime:time duration:int distance:float averageSpeed:float "
        "maxSpeed:float startLat:float startLon:float endLat:float endLon:float startOdometer:float "
        "endOdometer:float startPositionId:int endPositionId:int spentFuel:float"
    ),
    "stops": _columns(
        "deviceId:int deviceName:text startTime:time endTime:time duration:int latitude:float longitude:float "
        "positionId:int engineHours:int"
    ),
    "summary": _columns(
        "deviceId:int deviceName:text startTime:time endTime:time distance:float drivingDistance:float "
        "averageSpeed:float maxSpeed:float startOdometer:float endOdometer:float engineHours:int spentFuel:float"
    ),
    "events": _columns(
        "id:int type:text eventTime:time deviceId:int positionId:int geofenceId:int maintenanceId:int attributes:json"
    ),
    "totals": _columns(
        "devices:int trips:int stops:int distance:float drivingDistance:float duration:int averageSpeed:float "
        "maxSpeed:float"
    ),
}


@dataclass
class Section:
    """A named table whose rows arrive in chunks, so a long one never sits in memory whole."""

    name: str
    chunks: RowChunks

    @property
    def columns(self) -> tuple[Column, ...]:
        return SECTION_COLUMNS[self.name]


async def in_one_chunk(rows: Sequence[dict[str, Any]]) -> RowChunks:
    yield rows


def route_row(row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """A position read with its attributes as JSON text, which orjson writes out unparsed (a Fragment
    in place of the attributes' dict: the record only carries it to `to_api`)."""
    return PositionRecord.from_row({**row._mapping, "attributes": orjson.Fragment(row.attributes)}).to_api()


def event_row(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "eventTime": event.event_time,
        "deviceId": event.device_id,
        "positionId": event.position_id,
        "geofenceId": event.geofence_id,
        "maintenanceId": event.maintenance_id,
        "attributes": event.attributes,
    }
