"""Reading what reports need: positions straight into numpy arrays (binary COPY on PostgreSQL), devices, events.

A batch of devices' positions comes back as a `TrackBatch`; each device's, sorted by fix time, as a `Track`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from tracker_jobs.core.db import dialect_name
from tracker_jobs.devices.models import Device
from tracker_jobs.events.models import Event
from tracker_jobs.positions.models import Position

# A batch of devices is read with one query, a scan of the pages that hold its positions: fewer, larger
# batches read less. Its arrays take about 60 bytes a position at peak; the next batch loads meanwhile.
MAX_BATCH_POSITIONS = 10_000_000
SQLITE_BATCH_DEVICES = 50
ROUTE_CHUNK_ROWS = 5000
ATTRIBUTE_LOOKUP_CHUNK = 5000
_PG_EPOCH_US = 946_684_800 * 1_000_000  # PostgreSQL counts binary timestamps from 2000-01-01
_POSITIONS: sa.Table = Position.__table__  # type: ignore[attr-defined]
_COPY_HEADER_BYTES = 19
_COPY_TRAILER = b"\xff\xff"
_PARSE_EVERY_BYTES = 4 * 1024 * 1024

_TRACK_QUERY = """
SELECT id, device_id, fix_time, latitude, longitude, speed FROM positions
WHERE device_id = ANY($1::integer[]) AND fix_time >= $2 AND fix_time < $3 AND valid
"""
_TRACK_ESTIMATE = sa.text(
    "EXPLAIN (FORMAT JSON) SELECT 1 FROM positions "
    "WHERE device_id = ANY(:device_ids) AND fix_time >= :start AND fix_time < :end AND valid"
)
_TABLE_ROWS = sa.text("SELECT reltuples FROM pg_class WHERE oid = 'positions'::regclass")
# Below this share of the table, a batch is read with a bitmap scan of the pages that hold its range.
SCATTERED_READ_SHARE = 0.5
# The binary COPY row of _TRACK_QUERY: a field count, then each field's length and big-endian value.
_COPY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("id_size", ">i4"),
        ("id", ">i8"),
        ("device_size", ">i4"),
        ("device_id", ">i4"),
        ("time_size", ">i4"),
        ("fix_time", ">i8"),
        ("latitude_size", ">i4"),
        ("latitude", ">f8"),
        ("longitude_size", ">i4"),
        ("longitude", ">f8"),
        ("speed_size", ">i4"),
        ("speed", ">f8"),
    ]
)
_COLUMNS: dict[str, npt.DTypeLike] = {
    "id": np.int64,
    "device_id": np.int32,
    "fix_time": np.int64,
    "latitude": np.float64,
    "longitude": np.float64,
    "speed": np.float64,
}


@dataclass(frozen=True)
class Track:
    """One device's valid positions in a range, sorted by fix time (epoch microseconds, UTC)."""

    position_id: npt.NDArray[np.int64]
    fix_time_us: npt.NDArray[np.int64]
    latitude: npt.NDArray[np.float64]
    longitude: npt.NDArray[np.float64]
    speed: npt.NDArray[np.float64]  # knots

    def __len__(self) -> int:
        return len(self.fix_time_us)


@dataclass(frozen=True)
class DeviceInfo:
    id: int
    name: str
    attributes: dict[str, Any]


async def load_devices(session: AsyncSession, device_ids: Sequence[int]) -> list[DeviceInfo]:
    """The devices that exist among `device_ids`, by id."""
    query = select(Device.id, Device.name, Device.attributes).where(col(Device.id).in_(device_ids))
    rows = (await session.execute(query.order_by(col(Device.id)))).all()
    return [DeviceInfo(int(row.id), row.name, dict(row.attributes or {})) for row in rows]


async def plan_batches(
    session: AsyncSession, device_ids: Sequence[int], start: datetime, end: datetime
) -> list[list[int]]:
    """Device ids split so that each batch holds about MAX_BATCH_POSITIONS at most (PostgreSQL's estimate)."""
    ids = list(device_ids)
    if not ids:
        return []
    if dialect_name(session) != "postgresql":
        return [ids[i : i + SQLITE_BATCH_DEVICES] for i in range(0, len(ids), SQLITE_BATCH_DEVICES)]
    count = max(1, math.ceil(await _estimated_positions(session, ids, start, end) / MAX_BATCH_POSITIONS))
    size = math.ceil(len(ids) / count)
    return [ids[i : i + size] for i in range(0, len(ids), size)]


async def _estimated_positions(session: AsyncSession, device_ids: list[int], start: datetime, end: datetime) -> float:
    plan = (await session.execute(_TRACK_ESTIMATE, {"device_ids": device_ids, "start": start, "end": end})).scalar_one()
    return float((orjson.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"])


async def load_tracks(session: AsyncSession, device_ids: Sequence[int], start: datetime, end: datetime) -> TrackBatch:
    """The devices' valid positions in [start, end), read with one query."""
    if dialect_name(session) == "postgresql" and device_ids:
        columns = await _copy_columns(session, list(device_ids), start, end)
    else:
        columns = await _select_columns(session, list(device_ids), start, end)
    return TrackBatch(device_ids, columns)


async def _copy_columns(
    session: AsyncSession, device_ids: list[int], start: datetime, end: datetime
) -> dict[str, npt.NDArray[Any]]:
    """Binary COPY parsed with one numpy dtype: every field is fixed-width and NOT NULL."""
    table_rows = (await session.execute(_TABLE_ROWS)).scalar_one()
    if await _estimated_positions(session, device_ids, start, end) < SCATTERED_READ_SHARE * table_rows:
        # Positions are stored about in the order they arrive, so a time range lies in a compact run of
        # pages, which a bitmap scan reads alone. The planner, judging by device_id's scattered order,
        # expects those rows all over the table and would read all of it.
        await session.execute(sa.text("SET LOCAL enable_seqscan = off"))
        await session.execute(sa.text("SET LOCAL enable_indexscan = off"))
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    pending = bytearray()
    pieces: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in _COLUMNS}
    header_left = _COPY_HEADER_BYTES

    def parse_rows() -> None:
        rows = np.frombuffer(pending, dtype=_COPY_ROW, count=len(pending) // _COPY_ROW.itemsize)
        if not (rows["fields"] == len(_COLUMNS)).all():
            raise ValueError("unexpected binary COPY layout of positions")
        for name, dtype in _COLUMNS.items():
            pieces[name].append(rows[name].astype(dtype))
        parsed = rows.nbytes
        del rows  # the view must go before the buffer shrinks
        del pending[:parsed]

    async def receive(chunk: bytes) -> None:
        nonlocal header_left
        if header_left:
            skipped = min(header_left, len(chunk))
            chunk, header_left = chunk[skipped:], header_left - skipped
        pending.extend(chunk)
        if len(pending) >= _PARSE_EVERY_BYTES:
            parse_rows()

    driver = raw.driver_connection
    assert driver is not None
    await driver.copy_from_query(_TRACK_QUERY, device_ids, start, end, output=receive, format="binary")
    if bytes(pending[-len(_COPY_TRAILER) :]) != _COPY_TRAILER:
        raise ValueError("binary COPY of positions ended early")
    del pending[-len(_COPY_TRAILER) :]
    parse_rows()
    columns = {name: _concatenate(pieces.pop(name), dtype) for name, dtype in _COLUMNS.items()}
    columns["fix_time"] += _PG_EPOCH_US
    return columns


async def _select_columns(
    session: AsyncSession, device_ids: list[int], start: datetime, end: datetime
) -> dict[str, npt.NDArray[Any]]:
    table = _POSITIONS.c
    query = sa.select(table.id, table.device_id, table.fix_time, table.latitude, table.longitude, table.speed).where(
        table.device_id.in_(device_ids), table.fix_time >= start, table.fix_time < end, table.valid.is_(True)
    )
    rows = (await session.execute(query)).all()
    names = list(_COLUMNS)
    values = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    columns = {
        name: np.asarray(value, dtype=_COLUMNS[name])
        for name, value in zip(names, values, strict=True)
        if name != "fix_time"
    }
    columns["fix_time"] = epoch_us(values[names.index("fix_time")])
    return columns


def epoch_us(times: Sequence[datetime]) -> npt.NDArray[np.int64]:
    """Aware datetimes as epoch microseconds."""
    if not times:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(pd.DatetimeIndex(list(times)).as_unit("us").asi8, dtype=np.int64)


def _concatenate(pieces: list[npt.NDArray[Any]], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


class TrackBatch:
    """One batch's positions as column arrays in the order they were read; each device's track on request.

    Rows are grouped by device with a stable radix sort of small device codes, and sorted by fix time only
    for a device whose rows did not arrive in time order, so no sorted copy of the whole batch is made.
    """

    def __init__(self, device_ids: Sequence[int], columns: dict[str, npt.NDArray[Any]]) -> None:
        self._columns = columns
        self._device_ids = np.array(sorted(set(device_ids)), dtype=np.int64)
        codes = np.searchsorted(self._device_ids, columns.pop("device_id"))
        small = codes.astype(np.uint16 if len(self._device_ids) <= np.iinfo(np.uint16).max else np.uint32)
        self._order = np.argsort(small, kind="stable")
        self._bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(self._device_ids)))]

    def track(self, device_id: int) -> Track:
        code = int(np.searchsorted(self._device_ids, device_id))
        if code == len(self._device_ids) or self._device_ids[code] != device_id:
            raise KeyError(device_id)
        rows = self._order[self._bounds[code] : self._bounds[code + 1]]
        fix_time = self._columns["fix_time"][rows]
        if len(rows) > 1 and not (np.diff(fix_time) > 0).all():
            by_time = np.argsort(fix_time, kind="stable")
            rows, fix_time = rows[by_time], fix_time[by_time]
        return Track(
            position_id=self._columns["id"][rows],
            fix_time_us=fix_time,
            latitude=self._columns["latitude"][rows],
            longitude=self._columns["longitude"][rows],
            speed=self._columns["speed"][rows],
        )


async def load_position_attributes(session: AsyncSession, position_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The attributes of the given positions (the few at trip, stop and day boundaries)."""
    found: dict[int, dict[str, Any]] = {}
    ids = sorted(set(position_ids))
    postgres = dialect_name(session) == "postgresql"
    for first in range(0, len(ids), ATTRIBUTE_LOOKUP_CHUNK):
        chunk = ids[first : first + ATTRIBUTE_LOOKUP_CHUNK]
        # One array parameter on PostgreSQL rather than thousands of bound values.
        wanted = (
            _POSITIONS.c.id == sa.any_(sa.bindparam("ids", chunk, type_=postgresql.ARRAY(sa.BigInteger)))
            if postgres
            else _POSITIONS.c.id.in_(chunk)
        )
        for row in (await session.execute(sa.select(_POSITIONS.c.id, _POSITIONS.c.attributes).where(wanted))).all():
            found[int(row.id)] = row.attributes or {}
    return found


async def stream_positions(
    session: AsyncSession, device_id: int, start: datetime, end: datetime
) -> AsyncIterator[Sequence[Row[*tuple[Any, ...]]]]:
    """A device's positions in [start, end) in fix-time order, a chunk of rows at a time (server-side cursor);
    `attributes` as JSON text."""
    table = _POSITIONS.c
    # Attributes stay JSON text: the route's rows carry them into the JSON document as they are.
    columns = [column for column in table if column.name != "attributes"]
    query = (
        sa.select(*columns, sa.cast(table.attributes, sa.Text).label("attributes"))
        .where(table.device_id == device_id, table.fix_time >= start, table.fix_time < end)
        .order_by(table.fix_time)
        .execution_options(yield_per=ROUTE_CHUNK_ROWS)
    )
    result = await session.stream(query)
    async for rows in result.partitions():
        yield rows


async def load_events(
    session: AsyncSession, device_ids: Sequence[int], start: datetime, end: datetime, types: Sequence[str]
) -> list[Event]:
    """Events of the devices in [start, end), optionally of some types only, in time order."""
    query = select(Event).where(
        col(Event.device_id).in_(device_ids), col(Event.event_time) >= start, col(Event.event_time) < end
    )
    if types:
        query = query.where(col(Event.type).in_(types))
    return list((await session.execute(query.order_by(col(Event.event_time), col(Event.id)))).scalars())
