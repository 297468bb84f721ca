"""/api/notifications: the caller's notifications (create, list, change, delete), the event types,
a test through the caller's channels, the delivery log with retries, and the recent web
notifications; the seed's /api/tasks/notification/* endpoints."""

from __future__ import annotations

from aiohttp import web

from tracker_jobs.api.access import principal
from tracker_jobs.api.bodies import read_body
from tracker_jobs.api.keys import REDIS, SESSIONS, SETTINGS
from tracker_jobs.api.openapi import (
    ANY_OBJECT,
    BOOLEAN,
    ID,
    INTEGER,
    STRING,
    TIME,
    Operation,
    Query,
    Reply,
    array,
    documented,
    error_reply,
    nullable,
    obj,
)
from tracker_jobs.api.params import bounded_query_int, path_id, query_time
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.core.errors import FieldError
from tracker_jobs.devices.service import visible_device_ids
from tracker_jobs.events.outbox import enqueue_deliveries
from tracker_jobs.events.service import get_notification
from tracker_jobs.events.types import NOTIFICATION_TYPES
from tracker_jobs.notifications import service
from tracker_jobs.notifications import web as web_channel
from tracker_jobs.notifications.outbox_state import STATES
from tracker_jobs.notifications.schemas import AlertTask, NewNotification, NotificationChanges, OfflineTask
from tracker_jobs.notifications.tasks import enqueue_device_offline_alert, enqueue_geofence_alert
from tracker_jobs.notifications.testing import send_test

NOTIFICATION = obj(
    {
        "id": INTEGER,
        "type": {"type": "string", "enum": list(NOTIFICATION_TYPES)},
        "description": STRING,
        "always": BOOLEAN,
        "notificators": STRING,
        "attributes": ANY_OBJECT,
    }
)
DELIVERY = obj(
    {
        "id": INTEGER,
        "notificationId": nullable(INTEGER),
        "userId": INTEGER,
        "channel": STRING,
        "state": {"type": "string", "enum": list(STATES)},
        "eventId": nullable(INTEGER),
        "type": STRING,
        "deviceId": nullable(INTEGER),
        "eventTime": TIME,
        "attempts": INTEGER,
        "lastError": nullable(STRING),
        "createdAt": TIME,
        "nextAttemptAt": nullable(TIME),
        "sentAt": nullable(TIME),
    }
)
EXAMPLE = {
    "type": "geofenceEnter",
    "always": True,
    "notificators": "web,webhook",
    "attributes": {"webhookUrl": "https://example.com/hooks/tracker", "webhookSecret": "s3cret", "cooldown": 300},
}
QUEUED = obj({"task_id": STRING})


@documented(
    Operation(
        "The notifications the caller may see", {200: Reply("notifications", array(NOTIFICATION))}, tag="notifications"
    )
)
async def list_notifications(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        found = await service.list_notifications(session, principal(request))
    return json_response([service.notification_to_api(notification) for notification in found])


@documented(
    Operation(
        "Create a notification (linked to the caller; link devices with /api/permissions unless `always`)",
        {201: Reply("the notification", NOTIFICATION), 403: error_reply("systemAlert by someone not an admin")},
        body=NewNotification,
        example=EXAMPLE,
        tag="notifications",
    )
)
async def create_notification(request: web.Request) -> web.Response:
    fields = (await read_body(request, NewNotification)).given()
    async with transaction(request.app[SESSIONS]) as session:
        notification = await service.create_notification(session, request.app[SETTINGS], principal(request), fields)
    return json_response(service.notification_to_api(notification), status=201)


@documented(
    Operation("One notification", {200: Reply("the notification", NOTIFICATION)}, path={"id": ID}, tag="notifications")
)
async def get_notification_view(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        notification = await get_notification(session, principal(request), path_id(request))
    return json_response(service.notification_to_api(notification))


@documented(
    Operation(
        "Change some of a notification's fields",
        {200: Reply("the notification", NOTIFICATION)},
        path={"id": ID},
        body=NotificationChanges,
        example={"notificators": "web"},
        tag="notifications",
    )
)
async def update_notification(request: web.Request) -> web.Response:
    notification_id = path_id(request)
    fields = (await read_body(request, NotificationChanges)).given()
    async with transaction(request.app[SESSIONS]) as session:
        notification = await service.update_notification(
            session, request.app[SETTINGS], principal(request), notification_id, fields
        )
    return json_response(service.notification_to_api(notification))


@documented(Operation("Delete a notification", {204: Reply("deleted")}, path={"id": ID}, tag="notifications"))
async def delete_notification(request: web.Request) -> web.Response:
    notification_id = path_id(request)
    async with transaction(request.app[SESSIONS]) as session:
        await session.delete(await get_notification(session, principal(request), notification_id))
    return web.Response(status=204)


@documented(
    Operation(
        "The types a notification may have: every event type, dailySummary and systemAlert",
        {200: Reply("types", array(obj({"type": STRING, "description": STRING})))},
        tag="notifications",
    )
)
async def list_types(request: web.Request) -> web.Response:
    return json_response([{"type": name, "description": rule} for name, rule in NOTIFICATION_TYPES.items()])


@documented(
    Operation(
        "Send a test message through each channel of each of the caller's notifications, now; answers what each did",
        {
            200: Reply(
                "one result per notification and channel",
                array(
                    obj(
                        {
                            "deliveryId": INTEGER,
                            "notificationId": INTEGER,
                            "channel": STRING,
                            "state": STRING,
                            "error": nullable(STRING),
                        }
                    )
                ),
            )
        },
        body_required=False,
        tag="notifications",
    )
)
async def test_notifications(request: web.Request) -> web.Response:
    results = await send_test(request.app[REDIS], request.app[SESSIONS], request.app[SETTINGS], principal(request))
    return json_response(results)


@documented(
    Operation(
        "The delivery log: the caller's deliveries (an admin's: everyone's), newest first",
        {200: Reply("deliveries", array(DELIVERY))},
        query=(
            Query("state", {"type": "string", "enum": list(STATES)}, "only deliveries in this state"),
            Query("from", TIME, "created at or after"),
            Query("to", TIME, "created before"),
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many (default 100)"),
        ),
        tag="notifications",
    )
)
async def list_deliveries(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise FieldError("state", f"expected one of {', '.join(STATES)}, got {state[:32]!r}")
    limit = bounded_query_int(request, "limit", 100, 1, 1000)
    async with request.app[SESSIONS]() as session:
        found = await service.list_deliveries(
            session,
            principal(request),
            state=state,
            start=query_time(request, "from"),
            end=query_time(request, "to"),
            limit=limit,
        )
    return json_response([service.delivery_to_api(delivery) for delivery in found])


@documented(
    Operation(
        "Try a failed or dead delivery again, now",
        {202: Reply("the delivery, due now", DELIVERY), 409: error_reply("the delivery is pending or sent")},
        path={"id": ID},
        body_required=False,
        tag="notifications",
    )
)
async def retry_delivery(request: web.Request) -> web.Response:
    delivery_id = path_id(request)
    async with transaction(request.app[SESSIONS]) as session:
        delivery = await service.retry_delivery(session, principal(request), delivery_id, utcnow())
    await enqueue_deliveries(request.app[REDIS], [delivery_id])
    return json_response(service.delivery_to_api(delivery), status=202)


@documented(
    Operation(
        "The caller's web notifications of the last day, newest first (those about devices they may still see)",
        {200: Reply("events, as the websocket sent them", array(ANY_OBJECT))},
        tag="notifications",
    )
)
async def recent_notifications(request: web.Request) -> web.Response:
    caller = principal(request)
    items = await web_channel.recent(request.app[REDIS], caller.user_id)
    async with request.app[SESSIONS]() as session:
        visible = set((await session.execute(visible_device_ids(caller))).scalars())
    return json_response([item for item in items if item.get("deviceId") is None or item["deviceId"] in visible])


@documented(
    Operation(
        "Enqueue send_geofence_alert: a geofence event for one of the caller's devices, through its notifications",
        {202: Reply("the task", QUEUED), 404: error_reply("the device or geofence is not the caller's")},
        body=AlertTask,
        example={
            "device_id": 1,
            "geofence_id": 1,
            "event_type": "enter",
            "position_data": {"latitude": 52.5, "longitude": 13.4},
        },
        tag="notifications",
    )
)
async def post_geofence_alert(request: web.Request) -> web.Response:
    body = await read_body(request, AlertTask)
    task_id = await enqueue_geofence_alert(request.app[REDIS], request.app[SESSIONS], principal(request), body)
    return json_response({"task_id": task_id}, status=202)


@documented(
    Operation(
        "Enqueue send_device_offline_alert: a deviceOffline event for one of the caller's devices",
        {202: Reply("the task", QUEUED), 404: error_reply("the device is not the caller's")},
        body=OfflineTask,
        example={"device_id": 1, "offline_duration_minutes": 30},
        tag="notifications",
    )
)
async def post_device_offline(request: web.Request) -> web.Response:
    body = await read_body(request, OfflineTask)
    task_id = await enqueue_device_offline_alert(request.app[REDIS], request.app[SESSIONS], principal(request), body)
    return json_response({"task_id": task_id}, status=202)


ROUTES = [
    Route("GET", "/api/notifications", list_notifications),
    Route("POST", "/api/notifications", create_notification),
    Route("GET", "/api/notifications/types", list_types),
    Route("POST", "/api/notifications/test", test_notifications),
    Route("GET", "/api/notifications/deliveries", list_deliveries),
    Route("POST", "/api/notifications/deliveries/{id}/retry", retry_delivery),
    Route("GET", "/api/notifications/recent", recent_notifications),
    Route("GET", "/api/notifications/{id}", get_notification_view),
    Route("PUT", "/api/notifications/{id}", update_notification),
    Route("DELETE", "/api/notifications/{id}", delete_notification),
    Route("POST", "/api/tasks/notification/geofence-alert", post_geofence_alert),
    Route("POST", "/api/tasks/notification/device-offline", post_device_offline),
]
