"""What a delivery says: its event with the device, position, geofence and maintenance item it is
about, loaded for a whole job's deliveries at once, as one item shape every channel writes from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col, select

from tracker_jobs.core.db import iso
from tracker_jobs.devices.models import Device, Maintenance
from tracker_jobs.devices.service import device_to_api
from tracker_jobs.events.models import Event, Geofence, Notification
from tracker_jobs.events.service import event_to_api, geofence_to_api, maintenance_to_api
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.record import PositionRecord
from tracker_jobs.users.models import User


@dataclass
class Context:
    """Everything a job's deliveries refer to, by id."""

    events: dict[int, Event]
    devices: dict[int, Device]
    positions: dict[int, dict[str, Any]]
    geofences: dict[int, Geofence]
    maintenance: dict[int, Maintenance]
    notifications: dict[int, Notification]
    users: dict[int, User]

    def item(self, delivery: Mapping[str, Any]) -> dict[str, Any]:
        """The delivery's message as one item: `type`, `eventTime`, `event` (Traccar's shape, or
        None), `device`, `position`, `geofence`, `maintenance` (API shapes, or None), `attributes`."""
        event = self.events.get(delivery["event_id"]) if delivery["event_id"] is not None else None
        content = delivery["content"] or {}
        device = self.devices.get(delivery["device_id"]) if delivery["device_id"] is not None else None
        geofence = self.geofences.get(event.geofence_id) if event and event.geofence_id else None
        maintenance = self.maintenance.get(event.maintenance_id) if event and event.maintenance_id else None
        position = self.positions.get(event.position_id) if event and event.position_id else None
        if position is None and device is not None and device.position_id is not None and event is None:
            position = self.positions.get(device.position_id)
        return {
            "type": delivery["event_type"],
            "eventTime": delivery["event_time"],
            "event": event_to_api(event) if event else _event_shape(delivery, content),
            "device": device_to_api(device) if device else None,
            "position": position,
            "geofence": geofence_to_api(geofence) if geofence else None,
            "maintenance": maintenance_to_api(maintenance) if maintenance else None,
            "attributes": event.attributes if event else content.get("attributes", {}),
        }


def _event_shape(delivery: Mapping[str, Any], content: Mapping[str, Any]) -> dict[str, Any]:
    """A message that is no stored event (a daily summary, a system alert, a test) in an event's shape."""
    return {
        "id": None,
        "type": delivery["event_type"],
        "eventTime": iso(delivery["event_time"]),
        "deviceId": delivery["device_id"],
        "positionId": None,
        "geofenceId": None,
        "maintenanceId": None,
        "attributes": content.get("attributes", {}),
    }


Row = TypeVar("Row", bound=SQLModel)


async def _by_id(session: AsyncSession, model: type[Row], ids: Iterable[int | None]) -> dict[int, Row]:
    wanted = {value for value in ids if value is not None}
    if not wanted:
        return {}
    rows = (await session.execute(select(model).where(col(model.id).in_(wanted)))).scalars()  # type: ignore[attr-defined]
    return {row.id: row for row in rows}  # type: ignore[attr-defined]


async def load_context(session: AsyncSession, deliveries: list[Mapping[str, Any]]) -> Context:
    events = await _by_id(session, Event, (d["event_id"] for d in deliveries))
    devices = await _by_id(session, Device, (d["device_id"] for d in deliveries))
    position_ids = [event.position_id for event in events.values()]
    position_ids += [device.position_id for device in devices.values()]
    positions = {
        position_id: PositionRecord.from_row(position.model_dump()).to_api()
        for position_id, position in (await _by_id(session, Position, position_ids)).items()
    }
    return Context(
        events=events,
        devices=devices,
        positions=positions,
        geofences=await _by_id(session, Geofence, (event.geofence_id for event in events.values())),
        maintenance=await _by_id(session, Maintenance, (event.maintenance_id for event in events.values())),
        notifications=await _by_id(session, Notification, (d["notification_id"] for d in deliveries)),
        users=await _by_id(session, User, (d["user_id"] for d in deliveries)),
    )
