"""One position, one shape from the device to the websocket: `PositionRecord`, and its conversions.

A decoder fills a record in; the acceptor names its device and server time and writes it to its
partition's stream entry (`to_entry_item`); the drain reads it back (`from_entry`), the pipeline takes its
columns and adds attributes, the store writes it (`copy_rows`), and the live update, the API and the
route report send it (`to_api`). Only here does the field list meet its other spellings: the
database columns (`COLUMNS`, checked against the model and the migration by tests/migrations) and
Traccar's API names (`API_NAMES`).

Units: speed in knots, course in degrees, altitude and accuracy in metres; times are epoch seconds
(UTC) while the record travels, because numpy and the stream want numbers: they become datetimes on
their way into the database and ISO-8601 text in the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson


@dataclass(slots=True, kw_only=True)
class PositionRecord:
    device_id: int = 0  # 0 until the sender's device is resolved
    protocol: str = "osmand"
    fix_time: float
    server_time: float = 0.0  # when it was accepted; 0 until then
    latitude: float
    longitude: float
    altitude: float = 0.0
    # None: the device did not report it (a reported 0 is a standstill); the pipeline derives it from
    # the previous position before the record is stored, so a stored record always has both.
    speed: float | None = None
    course: float | None = None
    accuracy: float = 0.0
    valid: bool = True
    attributes: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # the stored row's id; None until stored

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PositionRecord:
        """A row read from the database (times as datetimes)."""
        return cls(**{**row, "fix_time": row["fix_time"].timestamp(), "server_time": row["server_time"].timestamp()})

    def to_api(self) -> dict[str, Any]:
        """Traccar's position, as the API, the websocket and the route report write it."""
        return {
            "id": self.id,
            "deviceId": self.device_id,
            "protocol": self.protocol,
            "fixTime": iso_epoch(self.fix_time),
            "serverTime": iso_epoch(self.server_time),
            "valid": self.valid,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "altitude": self.altitude,
            "speed": self.speed,
            "course": self.course,
            "accuracy": self.accuracy,
            "attributes": self.attributes,
        }


_FIELDS = tuple(f.name for f in fields(PositionRecord))
# The positions table's columns, in the order COPY writes them (every field but the id it assigns).
COLUMNS: tuple[str, ...] = tuple(name for name in _FIELDS if name != "id")
TIMES = ("fix_time", "server_time")
# Traccar's name of each field, in the order `to_api` writes them.
API_NAMES = {
    "id": "id",
    "device_id": "deviceId",
    "protocol": "protocol",
    "fix_time": "fixTime",
    "server_time": "serverTime",
    "valid": "valid",
    "latitude": "latitude",
    "longitude": "longitude",
    "altitude": "altitude",
    "speed": "speed",
    "course": "course",
    "accuracy": "accuracy",
    "attributes": "attributes",
}


def iso_epoch(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def to_entry_item(record: PositionRecord) -> bytes:
    """One record as an item of a stream entry's JSON array (the stream joins the items; orjson
    writes dataclasses natively)."""
    return orjson.dumps(record)


def from_entry(payload: bytes) -> list[PositionRecord]:
    """A stream entry's records. Entries written before records had an `id` key read the same, and a
    key this version does not know (written by a newer one during an upgrade) is left out."""
    items = orjson.loads(payload)
    try:
        return [PositionRecord(**item) for item in items]
    except TypeError:
        return [PositionRecord(**{name: item[name] for name in _FIELDS if name in item}) for item in items]


def copy_rows(records: list[PositionRecord], *, json_text: bool) -> list[tuple[Any, ...]]:
    """Records as tuples in COLUMNS order, in one pass (the hot path); attributes as JSON text for COPY."""
    server_times: dict[float, datetime] = {}  # a request group shares one server time: convert it once
    rows = []
    for record in records:
        server = record.server_time
        if server not in server_times:
            server_times[server] = datetime.fromtimestamp(server, UTC)
        rows.append(
            (
                record.device_id,
                record.protocol,
                datetime.fromtimestamp(record.fix_time, UTC),
                server_times[server],
                record.latitude,
                record.longitude,
                record.altitude,
                record.speed,
                record.course,
                record.accuracy,
                record.valid,
                orjson.dumps(record.attributes).decode() if json_text else record.attributes,
            )
        )
    return rows
