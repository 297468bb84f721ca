"""The JSON bodies /api/notifications takes, with Traccar's field names."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from tracker_jobs.api.bodies import RequestBody
from tracker_jobs.api.body_fields import Id, Omittable, OneOf, Text, Time, checked
from tracker_jobs.core.fields import check_json
from tracker_jobs.events.types import NOTIFICATION_TYPES

Attributes = Annotated[dict[str, Any], checked(check_json)]


class NotificationChanges(RequestBody):
    """PUT /api/notifications/{id}: the fields to change."""

    subject = "notification"
    type: Omittable[Annotated[str, OneOf(tuple(NOTIFICATION_TYPES))]] = None
    description: Omittable[Annotated[str, Text(512)]] = None
    always: Omittable[bool] = None
    notificators: Omittable[Annotated[str, Text(64)]] = None
    attributes: Omittable[Attributes] = None


class NewNotification(NotificationChanges):
    """POST /api/notifications: `notificators` is a comma-separated list of web, mail, webhook;
    attributes may hold `webhookUrl`, `webhookSecret`, `cooldown` (s), `alarms`, `geofenceIds`."""

    type: Annotated[str, OneOf(tuple(NOTIFICATION_TYPES))]
    notificators: Annotated[str, Text(64)]
    always: bool = Field(False)


class PositionData(RequestBody):
    """Where and when (the seed's `position_data`): the event's time is `fixTime`, or now."""

    subject = "position_data"
    latitude: Omittable[Annotated[float, Field(ge=-90, le=90)]] = None
    longitude: Omittable[Annotated[float, Field(ge=-180, le=180)]] = None
    fixTime: Omittable[Time] = None
    speed: Omittable[Annotated[float, Field(ge=0, le=1000)]] = None


class AlertTask(RequestBody):
    """POST /api/tasks/notification/geofence-alert: the seed's send_geofence_alert arguments."""

    subject = "task"
    device_id: Id
    geofence_id: Id
    event_type: Annotated[str, OneOf(("enter", "exit"))]
    position_data: PositionData = Field(default_factory=PositionData)


class OfflineTask(RequestBody):
    """POST /api/tasks/notification/device-offline: the seed's send_device_offline_alert arguments."""

    subject = "task"
    device_id: Id
    offline_duration_minutes: Annotated[int, Field(ge=0, le=10 * 365 * 24 * 60)] = 0
