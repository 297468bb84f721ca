"""The JSON bodies /api/geofences and /api/permissions take, with Traccar's field names."""

from __future__ import annotations

from typing import Annotated, Any, Self

from annotated_types import Gt, MaxLen, MinLen
from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from tracker_jobs.api.bodies import RequestBody
from tracker_jobs.api.body_fields import Id, Omittable, Text, checked
from tracker_jobs.core.fields import check_json, parse_number
from tracker_jobs.events.status import lead_problem

# Traccar's WKT, latitude first; checked point by point when the body is used (events/geofences.py).
Area = Annotated[str, MinLen(1), MaxLen(640_000)]
Attributes = Annotated[dict[str, Any], checked(check_json)]


class GeofenceChanges(RequestBody):
    """PUT /api/geofences/{id}: the fields to change."""

    subject = "geofence"
    name: Omittable[Annotated[str, Text(128)]] = None
    description: Omittable[Annotated[str, Text(512)]] = None
    area: Omittable[Area] = None
    attributes: Omittable[Attributes] = None


class NewGeofence(GeofenceChanges):
    """POST /api/geofences: `area` is POLYGON ((lat lon, ...)), CIRCLE (lat lon, radius_m) or
    LINESTRING (lat lon, ...) with `attributes.polylineDistance` (m)."""

    name: Annotated[str, Text(128)]
    area: Area


class Permission(RequestBody):
    """POST and DELETE /api/permissions: link (or unlink) a device or a user (admins only) with a
    geofence or a notification, or a device with a maintenance item — one of each."""

    subject = "permission"
    deviceId: Omittable[Id] = None
    userId: Omittable[Id] = None
    geofenceId: Omittable[Id] = None
    notificationId: Omittable[Id] = None
    maintenanceId: Omittable[Id] = None


Amount = Annotated[float, checked(parse_number)]  # finite


class MaintenanceChanges(RequestBody):
    """PUT /api/maintenance/{id}: the fields to change. `attributes.lead` (a reminder this much before
    each due point, in the item's unit) must be a number more than 0 and less than the period (checked
    against the period when the body sets both; events/service.py checks the item as stored)."""

    subject = "maintenance"
    name: Omittable[Annotated[str, Text(128)]] = None
    type: Omittable[Annotated[str, Text(64)]] = None
    start: Omittable[Amount] = None
    period: Omittable[Annotated[float, Gt(0), checked(parse_number)]] = None
    attributes: Omittable[Attributes] = None

    @model_validator(mode="after")
    def _lead_within_the_period(self) -> Self:
        problem = lead_problem(self.attributes, self.period)
        if problem is not None:
            # A 400 naming attributes.lead: the error is the field's, not the whole body's.
            detail = InitErrorDetails(
                type=PydanticCustomError("field_problem", "{problem}", {"problem": problem}),
                loc=("attributes", "lead"),
                input=(self.attributes or {}).get("lead"),
            )
            raise ValidationError.from_exception_data(type(self).__name__, [detail])
        return self


class NewMaintenance(MaintenanceChanges):
    """POST /api/maintenance: due each time the device's `type` value passes start + k * period:
    totalDistance in metres, a numeric position attribute such as hours, or `date`: start in epoch
    seconds and period in seconds, found by the calendar. An `attributes.lead` adds a reminder that
    much before each due point."""

    deviceId: Id
    name: Annotated[str, Text(128)]
    type: Annotated[str, Text(64)] = Field("totalDistance")
    start: Amount = 0.0
    period: Annotated[float, Gt(0), checked(parse_number)]
