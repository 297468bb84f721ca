"""The outbox: for each stored event, a delivery row per matching notification, recipient and channel,
written in the event's own transaction, so an event is never stored without the deliveries it owes
(a job sends them; a sweep finds any whose job was never enqueued).

Who gets an event: the users linked to a notification of its type, not disabled, who may see the
device (an admin sees every device), where the notification is `always` or linked to the device; then
its filters (`alarms`, `geofenceIds`) and its `cooldown` per device. An event older than the
notification age limit is stored but owes nothing (a day of buffered positions sends no alerts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from arq.connections import ArqRedis
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from tracker_jobs.core.db import dialect_name
from tracker_jobs.core.principal import Role
from tracker_jobs.devices.models import UserDevice
from tracker_jobs.events.models import Delivery, DeviceNotification, Event, Notification, UserNotification
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import DELIVER_NOTIFICATIONS
from tracker_jobs.users.models import User

CHANNELS = ("web", "mail", "webhook")
DELIVERIES_PER_JOB = 1000  # a job sends its webhooks side by side: enough to keep a slow receiver busy
_DELIVERIES: sa.Table = Delivery.__table__  # type: ignore[attr-defined]


def channels_of(notification_channels: str) -> list[str]:
    """`notificators` ("web,mail") as a list of known channels, in order, each once."""
    named = [name.strip() for name in notification_channels.split(",")]
    return [channel for channel in CHANNELS if channel in named]


def _names(value: Any) -> set[str]:
    """A filter given as "a,b" or ["a", "b"]."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return {str(item).strip() for item in items if str(item).strip()}


def matches_filters(attributes: Mapping[str, Any], event_type: str, event: Mapping[str, Any]) -> bool:
    """A notification's `alarms` filter narrows alarm events, its `geofenceIds` geofence events."""
    if event_type == "alarm" and (alarms := _names(attributes.get("alarms"))):
        return bool(_names(event.get("alarm")) & alarms)
    if event["geofence_id"] is not None and (geofences := _names(attributes.get("geofenceIds"))):
        return str(event["geofence_id"]) in geofences
    return True


def cooldown_s(attributes: Mapping[str, Any]) -> float:
    value = attributes.get("cooldown")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0.0


async def plan_deliveries(
    session: AsyncSession, event_ids: Sequence[int], now: datetime, max_age_s: float
) -> list[int]:
    """Write the deliveries the events owe; return their ids (to enqueue once this commits)."""
    if not event_ids:
        return []
    admin_or_sees_device = sa.or_(
        col(User.role) == Role.ADMIN,
        sa.exists().where(col(UserDevice.user_id) == col(User.id), col(UserDevice.device_id) == col(Event.device_id)),
    )
    covers_device = sa.or_(
        col(Notification.always),
        sa.exists().where(
            col(DeviceNotification.notification_id) == col(Notification.id),
            col(DeviceNotification.device_id) == col(Event.device_id),
        ),
    )
    query = (
        sa.select(
            col(Event.id),
            col(Event.type),
            col(Event.device_id),
            col(Event.event_time),
            col(Event.geofence_id),
            col(Event.attributes),
            col(Notification.id),
            col(Notification.notificators),
            col(Notification.attributes),
            col(UserNotification.user_id),
        )
        .join(Notification, col(Notification.type) == col(Event.type))
        .join(UserNotification, col(UserNotification.notification_id) == col(Notification.id))
        .join(User, col(User.id) == col(UserNotification.user_id))
        .where(
            col(Event.id).in_(list(event_ids)),
            col(Event.event_time) >= now - timedelta(seconds=max_age_s),
            col(User.disabled).is_(False),
            admin_or_sees_device,
            covers_device,
        )
        .order_by(col(Event.event_time), col(Event.id))
    )
    found = (await session.execute(query)).all()
    if not found:
        return []
    quiet_until = await _cooldowns(session, found)
    rows: list[dict[str, Any]] = []
    for (
        event_id,
        event_type,
        device_id,
        event_time,
        geofence_id,
        attributes,
        notification,
        channels,
        rule,
        user,
    ) in found:
        if not matches_filters(rule, event_type, {**attributes, "geofence_id": geofence_id}):
            continue
        if (pause := cooldown_s(rule)) > 0:
            key = (notification, device_id, event_type, user)
            if key in quiet_until and event_time < quiet_until[key]:
                continue
            quiet_until[key] = event_time + timedelta(seconds=pause)
        rows.extend(
            _row(notification, user, channel, event_type, event_time, now, event_id=event_id, device_id=device_id)
            for channel in channels_of(channels)
        )
    return await insert_deliveries(session, rows)


async def _cooldowns(
    session: AsyncSession, found: Iterable[Sequence[Any]]
) -> dict[tuple[int, int, str, int], datetime]:
    """For each notification with a cooldown: until when each device (per type and user) stays quiet,
    from the newest event it was last notified of."""
    pauses = {row[6]: cooldown_s(row[8]) for row in found}
    pauses = {notification: pause for notification, pause in pauses.items() if pause > 0}
    if not pauses:
        return {}
    newest = sa.func.max(col(Delivery.event_time))
    query = (
        sa.select(
            col(Delivery.notification_id),
            col(Delivery.device_id),
            col(Delivery.event_type),
            col(Delivery.user_id),
            newest,
        )
        .where(col(Delivery.notification_id).in_(list(pauses)), col(Delivery.device_id).is_not(None))
        .group_by(
            col(Delivery.notification_id), col(Delivery.device_id), col(Delivery.event_type), col(Delivery.user_id)
        )
    )
    quiet: dict[tuple[int, int, str, int], datetime] = {}
    for notification, device_id, event_type, user, last in (await session.execute(query)).all():
        assert notification is not None  # as the query asks
        assert device_id is not None
        quiet[(notification, device_id, event_type, user)] = last + timedelta(seconds=pauses[notification])
    return quiet


def _row(
    notification: int | None,
    user: int,
    channel: str,
    event_type: str,
    event_time: datetime,
    now: datetime,
    *,
    event_id: int | None = None,
    device_id: int | None = None,
    content: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "notification_id": notification,
        "user_id": user,
        "channel": channel,
        "state": "pending",
        "event_id": event_id,
        "event_type": event_type,
        "device_id": device_id,
        "event_time": event_time,
        "content": content or {},
        "attempts": 0,
        "last_error": None,
        "created_at": now,
        "next_attempt_at": now,
        "leased_until": None,
        "sent_at": None,
    }


async def plan_message(
    session: AsyncSession,
    recipients: Iterable[tuple[int | None, int, str]],
    event_type: str,
    content: dict[str, Any],
    now: datetime,
    *,
    device_id: int | None = None,
) -> list[int]:
    """Deliveries of something that is no stored event (a daily summary, a system alert, a test):
    one per (notification, user, channel), saying `content`."""
    rows = [
        _row(notification, user, channel, event_type, now, now, device_id=device_id, content=content)
        for notification, user, channel in recipients
    ]
    return await insert_deliveries(session, rows)


async def insert_deliveries(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    dialect = postgresql if dialect_name(session) == "postgresql" else sqlite
    statement = dialect.insert(_DELIVERIES).on_conflict_do_nothing().returning(_DELIVERIES.c.id)
    return [row[0] for row in (await session.execute(statement, rows)).all()]


async def enqueue_deliveries(redis: ArqRedis, delivery_ids: Sequence[int], *, defer_s: float = 0.0) -> None:
    """Hand the deliveries to the notifications queue (after their rows commit). A lost enqueue is
    no lost delivery: the sweep finds pending rows nobody sent."""
    ids = list(delivery_ids)
    for start in range(0, len(ids), DELIVERIES_PER_JOB):
        chunk = ids[start : start + DELIVERIES_PER_JOB]
        await enqueue(redis, DELIVER_NOTIFICATIONS, delivery_ids=chunk, defer_s=defer_s or None)
