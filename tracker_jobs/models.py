"""Every table, imported in one place so metadata (and alembic) sees the whole schema."""

from sqlmodel import SQLModel

from tracker_jobs.devices.models import Device, DeviceCommand, Maintenance, UserDevice
from tracker_jobs.events.models import DeviceGeofence, Event, Geofence, UserGeofence
from tracker_jobs.jobs.models import JobRecord
from tracker_jobs.notifications.models import NotificationRule, SentNotification
from tracker_jobs.positions.models import Position
from tracker_jobs.reports.models import Report, ReportFile
from tracker_jobs.users.models import ApiToken, User, UserSession

metadata = SQLModel.metadata

__all__ = [
    "ApiToken",
    "Device",
    "DeviceCommand",
    "DeviceGeofence",
    "Event",
    "Geofence",
    "JobRecord",
    "Maintenance",
    "NotificationRule",
    "Position",
    "Report",
    "ReportFile",
    "SentNotification",
    "User",
    "UserDevice",
    "UserGeofence",
    "UserSession",
    "metadata",
]
