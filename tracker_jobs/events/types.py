"""Every event type the engine detects (Traccar's names), with the rule that makes it: the API lists
them (GET /api/notifications/types) and a notification names one of them."""

from __future__ import annotations

EVENT_TYPES: dict[str, str] = {
    "geofenceEnter": "a position inside a linked geofence after one outside it",
    "geofenceExit": "a position outside a linked geofence (beyond its hysteresis) after one inside",
    "deviceOverspeed": "speed above the limit (device or geofence speedLimit) x multiplier, once per episode",
    "deviceMoving": "the trips report's departure: minDistance from where the device stopped",
    "deviceStopped": "the trips report's arrival: within minDistance for minDuration, or a silence",
    "deviceOnline": "a position from a device that was not online",
    "deviceUnknown": "no position for TRACKER_DEVICE_UNKNOWN_AFTER seconds",
    "deviceOffline": "no position for TRACKER_DEVICE_OFFLINE_AFTER seconds",
    "deviceInactive": "no position for the device's inactivityStart seconds, then every inactivityPeriod",
    "alarm": "an alarm attribute not present in the device's previous position",
    "ignitionOn": "the ignition attribute turned true",
    "ignitionOff": "the ignition attribute turned false",
    "maintenance": "a maintenance item's value passed start + k x period",
    "queuedCommandSent": "a queued command went to its device (in a reply, or accepted by its gateway)",
    "commandResult": "a device's result came back (attributes.commandId: the command it answers, if any)",
    "commandExpired": "a command was not sent, or not answered, before its expiry",
}
# Notifications of these are not about one event: a daily summary to each user, alerts to admins.
MESSAGE_TYPES: dict[str, str] = {
    "dailySummary": "yesterday per device, at the user's local hour",
    "systemAlert": "an engine alert (workers, queues, failures, Redis memory, dead deliveries) opened or resolved",
}
NOTIFICATION_TYPES: dict[str, str] = {**EVENT_TYPES, **MESSAGE_TYPES}
