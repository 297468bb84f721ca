"""Notifications (who hears of which events, by which channels) and their deliveries, as the caller
may see them: a user their own, an admin every one."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import iso
from tracker_jobs.core.errors import Conflict, FieldError, Forbidden, not_found
from tracker_jobs.core.fields import SECRET_SHOWN
from tracker_jobs.core.principal import Principal
from tracker_jobs.events.models import Delivery, Notification, UserNotification
from tracker_jobs.events.outbox import CHANNELS, channels_of
from tracker_jobs.events.service import get_notification, visible_notifications
from tracker_jobs.notifications.outbox_state import DEAD, FAILED, retry_now
from tracker_jobs.notifications.webhook import check_webhook_url


def check_notification(settings: Settings, principal: Principal, fields: dict[str, Any]) -> None:
    """The whole notification as it will be: its channels known and usable, its attributes sound."""
    named = [name.strip() for name in fields["notificators"].split(",") if name.strip()]
    unknown = [name for name in named if name not in CHANNELS]
    if unknown or not named:
        raise FieldError(
            "notificators", f"expected a comma-separated list of {', '.join(CHANNELS)}, got {fields['notificators']!r}"
        )
    if fields["type"] == "systemAlert" and not principal.is_admin:
        raise Forbidden("only admins receive system alerts")
    attributes = fields.get("attributes") or {}
    if "mail" in named and settings.smtp_url is None:
        raise FieldError("notificators", "mail needs an SMTP server: set TRACKER_SMTP_URL")
    if "webhook" in named:
        url = attributes.get("webhookUrl")
        if not isinstance(url, str):
            raise FieldError("attributes.webhookUrl", "a webhook needs its URL (http:// or https://)")
        check_webhook_url(url)
    secret = attributes.get("webhookSecret")
    if secret is not None and (not isinstance(secret, str) or not 0 < len(secret) <= 256):
        raise FieldError("attributes.webhookSecret", "expected text of 1 to 256 characters")
    cooldown = attributes.get("cooldown")
    if cooldown is not None and (
        isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or not 0 <= cooldown < math.inf
    ):
        raise FieldError("attributes.cooldown", f"expected seconds (0 or more), got {cooldown!r}")
    geofences = attributes.get("geofenceIds")
    if geofences is not None and (
        not isinstance(geofences, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in geofences)
    ):
        raise FieldError("attributes.geofenceIds", "expected a list of geofence ids")
    alarms = attributes.get("alarms")
    if alarms is not None and not isinstance(alarms, str | list):
        raise FieldError("attributes.alarms", "expected alarm names, comma-separated or as a list")


async def list_notifications(session: AsyncSession, principal: Principal) -> list[Notification]:
    query = visible_notifications(principal).order_by(col(Notification.id))
    return list((await session.execute(query)).scalars())


async def create_notification(
    session: AsyncSession, settings: Settings, principal: Principal, fields: dict[str, Any]
) -> Notification:
    """A notification linked to its creator (as Traccar does; an admin may link it to others too)."""
    check_notification(settings, principal, fields)
    notification = Notification(**fields)
    session.add(notification)
    await session.flush()
    assert notification.id is not None
    session.add(UserNotification(user_id=principal.user_id, notification_id=notification.id))
    return notification


async def update_notification(
    session: AsyncSession, settings: Settings, principal: Principal, notification_id: int, fields: dict[str, Any]
) -> Notification:
    notification = await get_notification(session, principal, notification_id)
    attributes = fields.get("attributes")
    if attributes is not None and attributes.get("webhookSecret") == SECRET_SHOWN:
        # The client sent back what it was shown: the secret stays as it is.
        fields["attributes"] = {**attributes, "webhookSecret": notification.attributes.get("webhookSecret")}
    merged = {**notification.model_dump(exclude={"id"}), **fields}
    check_notification(settings, principal, merged)
    for key, value in fields.items():
        setattr(notification, key, value)
    return notification


def notification_to_api(notification: Notification) -> dict[str, Any]:
    attributes = dict(notification.attributes)
    if attributes.get("webhookSecret"):
        attributes["webhookSecret"] = SECRET_SHOWN
    return {
        "id": notification.id,
        "type": notification.type,
        "description": notification.description,
        "always": notification.always,
        "notificators": ",".join(channels_of(notification.notificators)),
        "attributes": attributes,
    }


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    *,
    state: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[Delivery]:
    """The caller's deliveries (an admin's: everyone's), newest first."""
    query = select(Delivery)
    if not principal.is_admin:
        query = query.where(col(Delivery.user_id) == principal.user_id)
    if state is not None:
        query = query.where(col(Delivery.state) == state)
    if start is not None:
        query = query.where(col(Delivery.created_at) >= start)
    if end is not None:
        query = query.where(col(Delivery.created_at) < end)
    query = query.order_by(col(Delivery.id).desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def retry_delivery(session: AsyncSession, principal: Principal, delivery_id: int, now: datetime) -> Delivery:
    """A failed or dead delivery, due again now (the caller enqueues it once this commits)."""
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None or (not principal.is_admin and delivery.user_id != principal.user_id):
        raise not_found(f"delivery {delivery_id}")
    if delivery.state not in (FAILED, DEAD):
        raise Conflict(f"delivery {delivery_id} is {delivery.state}: only failed and dead deliveries are retried")
    await retry_now(session, delivery, now)
    return delivery


def delivery_to_api(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "notificationId": delivery.notification_id,
        "userId": delivery.user_id,
        "channel": delivery.channel,
        "state": delivery.state,
        "eventId": delivery.event_id,
        "type": delivery.event_type,
        "deviceId": delivery.device_id,
        "eventTime": iso(delivery.event_time),
        "attempts": delivery.attempts,
        "lastError": delivery.last_error,
        "createdAt": iso(delivery.created_at),
        "nextAttemptAt": iso(delivery.next_attempt_at) if delivery.state in ("pending", FAILED) else None,
        "sentAt": iso(delivery.sent_at),
    }
