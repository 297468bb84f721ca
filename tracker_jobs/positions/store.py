"""One database transaction per batch: read the devices' stored state, insert the positions in bulk,
move each device forward. COPY on PostgreSQL, one executemany on SQLite."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from tracker_jobs.core.db import UTCDateTime, dialect_name
from tracker_jobs.devices.models import Device, DeviceMaintenance
from tracker_jobs.events.models import DeviceGeofence
from tracker_jobs.events.store import Recorded, record_events
from tracker_jobs.positions.detectors import MaintenanceItem, maintenance_of
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.pipeline import DetectedEvent, DeviceState
from tracker_jobs.positions.record import COLUMNS, PositionRecord, copy_rows

_POSITIONS: sa.Table = Position.__table__  # type: ignore[attr-defined]

# Rows arrive by COPY into a per-connection scratch table, then move over in one statement that skips
# what is stored already and returns the new ids.
_CREATE_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS incoming_positions (
    device_id integer, protocol varchar(32), fix_time timestamptz, server_time timestamptz,
    latitude float8, longitude float8, altitude float8, speed float8, course float8, accuracy float8,
    valid boolean, attributes jsonb
) ON COMMIT DELETE ROWS
"""
_MOVE_INCOMING = """
INSERT INTO positions (device_id, protocol, fix_time, server_time, latitude, longitude, altitude, speed,
                       course, accuracy, valid, attributes)
SELECT device_id, protocol, fix_time, server_time, latitude, longitude, altitude, speed,
       course, accuracy, valid, attributes
FROM incoming_positions
ON CONFLICT (device_id, fix_time) DO NOTHING RETURNING id, device_id, fix_time
"""

_DEVICE_SEEN = sa.text(
    "UPDATE devices SET status = 'online', last_update = :server_time WHERE id = :device_id"
).bindparams(sa.bindparam("server_time", type_=UTCDateTime()))

# The newest position only moves forward: the guard protects against a drainer that lost its lock.
_DEVICE_NEWEST = sa.text(
    """
    UPDATE devices SET position_id = :position_id, position_time = :fix_time, total_distance = :odometer,
                       motion = :motion, motion_state = COALESCE(:motion_state, motion_state)
    WHERE id = :device_id AND (position_time IS NULL OR position_time < :fix_time)
    """
).bindparams(sa.bindparam("fix_time", type_=UTCDateTime()))


# What a batch can be refused with that no retry will mend: values the database will not take.
REFUSED_FOR_GOOD: tuple[type[Exception], ...] = (asyncpg.DataError, sqlalchemy.exc.DataError, ValueError, TypeError)


@dataclass(frozen=True)
class StoredDevice:
    """A device as the pipeline and live updates need it."""

    id: int
    name: str
    unique_id: str
    disabled: bool
    state: DeviceState | None
    geofenced: bool = False  # linked to a geofence: the batch loads the geofences only then
    speed_limit: float | None = None  # knots
    status: str = "online"  # before this batch
    maintained: bool = False  # has maintenance items: the batch loads them only then


# PostgreSQL reads the batch's devices with one array parameter (no IN list to render per batch). It
# goes through the session, not the raw driver: its first statement is what opens the transaction.
_PG_LOAD_DEVICES = sa.text(
    """
    SELECT d.id, d.name, d.unique_id, d.disabled, d.status, d.speed_limit, d.total_distance,
           p.fix_time, p.latitude, p.longitude,
           p.attributes, d.motion_state,
           EXISTS (SELECT 1 FROM device_geofences AS dg WHERE dg.device_id = d.id),
           EXISTS (SELECT 1 FROM device_maintenances AS dm WHERE dm.device_id = d.id)
    FROM devices AS d LEFT JOIN positions AS p ON p.id = d.position_id AND p.fix_time = d.position_time
    WHERE d.id = ANY(:ids)
    """
).bindparams(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Integer())))


async def load_devices(session: AsyncSession, device_ids: Iterable[int]) -> dict[int, StoredDevice]:
    """The batch's devices that still exist, with their newest stored position and whether any
    geofence is linked to them (one query)."""
    wanted = sorted(set(device_ids))
    rows: Iterable[Any]
    if dialect_name(session) == "postgresql":
        rows = await session.execute(_PG_LOAD_DEVICES, {"ids": wanted})
    else:
        rows = await session.execute(
            sa.select(
                col(Device.id),
                col(Device.name),
                col(Device.unique_id),
                col(Device.disabled),
                col(Device.status),
                col(Device.speed_limit),
                col(Device.total_distance),
                col(Position.fix_time),
                col(Position.latitude),
                col(Position.longitude),
                col(Position.attributes),
                col(Device.motion_state),
                sa.exists().where(col(DeviceGeofence.device_id) == col(Device.id)),
                sa.exists().where(col(DeviceMaintenance.device_id) == col(Device.id)),
            )
            .outerjoin(
                Position,
                sa.and_(
                    col(Position.id) == col(Device.position_id), col(Position.fix_time) == col(Device.position_time)
                ),
            )
            .where(col(Device.id).in_(wanted))
        )
    devices: dict[int, StoredDevice] = {}
    for (
        device_id,
        name,
        unique_id,
        disabled,
        status,
        limit,
        odometer,
        fix_time,
        latitude,
        longitude,
        attributes,
        motion_state,
        fenced,
        maintained,
    ) in rows:
        state = None
        if fix_time is not None:
            state = DeviceState(
                fix_time=fix_time.timestamp(),
                latitude=latitude,
                longitude=longitude,
                odometer=odometer,
                attributes=attributes,
                motion_state=motion_state,
            )
        devices[device_id] = StoredDevice(
            device_id, name, unique_id, disabled, state, fenced, limit, status, maintained
        )
    return devices


_PG_IDS_OF = """
SELECT p.id, p.device_id, p.fix_time FROM positions AS p
JOIN unnest($1::integer[], $2::timestamptz[]) AS wanted(device_id, fix_time)
  ON p.device_id = wanted.device_id AND p.fix_time = wanted.fix_time
"""


@dataclass(frozen=True)
class Inserted:
    stored: int  # rows this call stored (the others were stored already)
    ids: dict[tuple[int, float], int]  # (device, fix time) -> id, for at least every `wanted` row it stored


async def insert_positions(
    session: AsyncSession, records: list[PositionRecord], wanted: list[tuple[int, float]]
) -> Inserted:
    """Store the records, skipping any already stored. `wanted`: (device, fix time) of the records
    whose ids the caller needs."""
    if not records:
        return Inserted(0, {})
    if dialect_name(session) == "postgresql":
        return await _copy_positions(await _driver(session), copy_rows(records, json_text=True), wanted)
    rows = copy_rows(records, json_text=False)
    statement = (
        sqlite.insert(_POSITIONS)
        .on_conflict_do_nothing()
        .returning(_POSITIONS.c.id, _POSITIONS.c.device_id, _POSITIONS.c.fix_time)
    )
    inserted = (await session.execute(statement, [dict(zip(COLUMNS, row, strict=True)) for row in rows])).all()
    return Inserted(len(inserted), _id_map(inserted))


async def _copy_positions(driver: Any, rows: list[tuple[Any, ...]], wanted: list[tuple[int, float]]) -> Inserted:
    """COPY straight into positions; the pipeline has already dropped duplicates, so a conflict means
    a batch run again after a crash: then, from the top, through a scratch table that skips them."""
    try:
        async with driver.transaction():  # a savepoint: a conflict undoes only this attempt
            await driver.copy_records_to_table("positions", records=rows, columns=COLUMNS)
    except asyncpg.UniqueViolationError:
        await driver.execute(_CREATE_INCOMING)
        await driver.copy_records_to_table("incoming_positions", records=rows, columns=COLUMNS)
        inserted = await driver.fetch(_MOVE_INCOMING)
        return Inserted(len(inserted), _id_map(inserted))
    devices = [device_id for device_id, _ in wanted]
    times = [datetime.fromtimestamp(fix_time, UTC) for _, fix_time in wanted]
    return Inserted(len(rows), _id_map(await driver.fetch(_PG_IDS_OF, devices, times)))


def _id_map(rows: Iterable[Any]) -> dict[tuple[int, float], int]:
    return {(device_id, fix_time.timestamp()): position_id for position_id, device_id, fix_time in rows}


# PostgreSQL: both moves in one statement over arrays, however many devices the batch touched: one new
# version of each device's row a batch, not two. Devices' rows are rewritten at every batch and each old
# version is dead until pruned: fewer keep the updates HOT and the table small, so that reading all of it
# (retention's sweeps and detach do) stays cheap. The newest position only moves forward (the guard
# protects against a drainer that lost its lock); a device without a newer one keeps its columns.
_FORWARD = "s.fix_time > coalesce(d.position_time, '-infinity')"  # NULL (false) without a newest row
_PG_DEVICES_MOVED = f"""
UPDATE devices AS d SET status = 'online', last_update = seen.server_time,
    position_id = CASE WHEN {_FORWARD} THEN s.position_id ELSE d.position_id END,
    position_time = CASE WHEN {_FORWARD} THEN s.fix_time ELSE d.position_time END,
    total_distance = CASE WHEN {_FORWARD} THEN s.odometer ELSE d.total_distance END,
    motion = CASE WHEN {_FORWARD} THEN s.motion ELSE d.motion END,
    motion_state = CASE WHEN {_FORWARD} THEN COALESCE(s.motion_state::jsonb, d.motion_state) ELSE d.motion_state END
FROM unnest($1::integer[], $2::timestamptz[]) AS seen(device_id, server_time)
LEFT JOIN unnest($3::integer[], $4::bigint[], $5::timestamptz[], $6::float8[], $7::boolean[], $8::text[])
     AS s(device_id, position_id, fix_time, odometer, motion, motion_state) USING (device_id)
WHERE d.id = seen.device_id
"""  # noqa: S608 (constant text)


async def move_devices(
    session: AsyncSession,
    seen: dict[int, float],
    newest: dict[int, PositionRecord],
    ids: dict[tuple[int, float], int],
    motion_states: Mapping[int, Any],
) -> None:
    """Every device that sent data is online; those with a newer position move forward, with their
    new trip detection state (a device without one keeps what it had). Every device of `newest` is in
    `seen` (both come from the batch's kept rows; newest from those that are not late): PostgreSQL's
    statement moves only devices it joins from `seen`."""
    seen_rows = [{"device_id": d, "server_time": datetime.fromtimestamp(t, UTC)} for d, t in seen.items()]
    forward = [
        {
            "device_id": device_id,
            "position_id": ids[(device_id, record.fix_time)],
            "fix_time": datetime.fromtimestamp(record.fix_time, UTC),
            "odometer": record.attributes["totalDistance"],
            "motion": record.attributes["motion"],
            "motion_state": _json_or_none(motion_states.get(device_id)),
        }
        for device_id, record in newest.items()
        if (device_id, record.fix_time) in ids
    ]
    if not seen_rows:
        return
    if dialect_name(session) == "postgresql":
        driver = await _driver(session)
        columns = ("device_id", "position_id", "fix_time", "odometer", "motion", "motion_state")
        await driver.execute(
            _PG_DEVICES_MOVED, *_columns(seen_rows, ("device_id", "server_time")), *_columns(forward, columns)
        )
        return
    await session.execute(_DEVICE_SEEN, seen_rows)
    if forward:
        await session.execute(_DEVICE_NEWEST, forward)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def load_maintenance(session: AsyncSession, device_ids: list[int]) -> tuple[MaintenanceItem, ...]:
    """The maintenance items of these devices: one per item and device it applies to."""
    return tuple(
        MaintenanceItem(item.id, device_id, item.name, item.type, item.start, item.period)
        for item, device_id in await maintenance_of(session, device_ids)
        if item.id is not None and item.period > 0
    )


# Events about a geofence or a maintenance item name it in their own field too (Traccar's).
_GEOFENCE_EVENTS = ("geofenceEnter", "geofenceExit")


async def store_events(
    session: AsyncSession,
    events: list[DetectedEvent],
    ids: dict[tuple[int, float], int],
    now: datetime,
    notify_max_age_s: float,
) -> Recorded:
    """Store the batch's events, each at its position (its id, time and place), and their deliveries."""
    return await record_events(
        session,
        [
            {
                "type": event.type,
                "device_id": event.position.device_id,
                "event_time": datetime.fromtimestamp(event.position.fix_time, UTC),
                "position_id": ids.get((event.position.device_id, event.position.fix_time)),
                "geofence_id": event.subject if event.type in _GEOFENCE_EVENTS else None,
                "maintenance_id": event.subject if event.type == "maintenance" else None,
                "subject": event.subject,
                "latitude": event.position.latitude,
                "longitude": event.position.longitude,
                "attributes": event.attributes,
            }
            for event in events
        ],
        now,
        notify_max_age_s,
    )


def _columns(rows: list[dict[str, Any]], names: tuple[str, ...]) -> list[list[Any]]:
    return [[row[name] for row in rows] for name in names]


async def _driver(session: AsyncSession) -> Any:
    """The asyncpg connection under the session, inside the session's transaction. SQLAlchemy opens
    that transaction lazily, with the session's first statement (without one, the driver's statements
    would each commit on their own): when the driver's would be the first, a no-op opens it."""
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver
