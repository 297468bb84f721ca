"""Every table, imported in one place so metadata (and alembic) sees the whole schema."""

from sqlmodel import SQLModel

from tracker_jobs.commands.models import Command, SavedCommand
from tracker_jobs.devices.models import Device, DeviceMaintenance, Maintenance, UserDevice
from tracker_jobs.events.models import (
    Delivery,
    DeviceGeofence,
    DeviceNotification,
    Event,
    Geofence,
    Notification,
    UserGeofence,
    UserNotification,
)
from tracker_jobs.jobs.models import JobRecord
from tracker_jobs.positions.models import Position
from tracker_jobs.reports.models import Report, ReportFile
from tracker_jobs.users.models import ApiToken, User, UserSession

metadata = SQLModel.metadata

__all__ = [
    "ApiToken",
    "Command",
    "Delivery",
    "Device",
    "DeviceGeofence",
    "DeviceMaintenance",
    "DeviceNotification",
    "Event",
    "Geofence",
    "JobRecord",
    "Maintenance",
    "Notification",
    "Position",
    "Report",
    "ReportFile",
    "SavedCommand",
    "User",
    "UserDevice",
    "UserGeofence",
    "UserNotification",
    "UserSession",
    "metadata",
]
