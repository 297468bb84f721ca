"""The JSON bodies /api/geofences and /api/permissions take, with Traccar's field names."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Gt, MaxLen, MinLen
from pydantic import Field

from tracker_jobs.api.bodies import RequestBody
from tracker_jobs.api.body_fields import Id, Omittable, Text, checked
from tracker_jobs.core.fields import check_json, parse_number

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
    geofence or a notification — one of each."""

    subject = "permission"
    deviceId: Omittable[Id] = None
    userId: Omittable[Id] = None
    geofenceId: Omittable[Id] = None
    notificationId: Omittable[Id] = None


Amount = Annotated[float, checked(parse_number)]  # finite


class MaintenanceChanges(RequestBody):
    """PUT /api/maintenance/{id}: the fields to change."""

    subject = "maintenance"
    name: Omittable[Annotated[str, Text(128)]] = None
    type: Omittable[Annotated[str, Text(64)]] = None
    start: Omittable[Amount] = None
    period: Omittable[Annotated[float, Gt(0), checked(parse_number)]] = None
    attributes: Omittable[Attributes] = None


class NewMaintenance(MaintenanceChanges):
    """POST /api/maintenance: due each time the device's `type` value (totalDistance in metres, or a
    numeric position attribute such as hours) passes start + k * period."""

    deviceId: Id
    name: Annotated[str, Text(128)]
    type: Annotated[str, Text(64)] = Field("totalDistance")
    start: Amount = 0.0
    period: Annotated[float, Gt(0), checked(parse_number)]
