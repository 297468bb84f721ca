"""POST /api/notifications/test: a test message through every channel of the caller's own
notifications, sent now through the real outbox (so it shows in the delivery log), answering what
each channel did."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.core.principal import Principal
from tracker_jobs.events.models import Delivery, Notification, UserNotification
from tracker_jobs.events.outbox import channels_of, plan_message
from tracker_jobs.notifications.dispatch import deliver
from tracker_jobs.notifications.webhook import webhook_client

TEST_MESSAGE = "This is a test notification from tracker-jobs."


async def send_test(
    redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], settings: Settings, caller: Principal
) -> list[dict[str, Any]]:
    now = utcnow()
    async with transaction(sessions) as session:
        mine = (
            select(Notification)
            .join(UserNotification, col(UserNotification.notification_id) == col(Notification.id))
            .where(col(UserNotification.user_id) == caller.user_id)
        )
        notifications = list((await session.execute(mine.order_by(col(Notification.id)))).scalars())
        recipients = [
            (notification.id, caller.user_id, channel)
            for notification in notifications
            for channel in channels_of(notification.notificators)
        ]
        content = {"attributes": {"message": TEST_MESSAGE}}
        ids = await plan_message(session, recipients, "test", content, now)
    if ids:
        async with webhook_client(
            allow_private=settings.webhook_allow_private, timeout_s=settings.webhook_timeout_s
        ) as client:
            # A test shows what a channel does now: no digest window holds its mail back.
            await deliver(redis, sessions, settings, client, now, delivery_ids=ids, digest=False)
    async with sessions() as session:
        found = (
            await session.execute(select(Delivery).where(col(Delivery.id).in_(ids)).order_by(col(Delivery.id)))
        ).scalars()
        return [
            {
                "deliveryId": delivery.id,
                "notificationId": delivery.notification_id,
                "channel": delivery.channel,
                "state": delivery.state,
                "error": delivery.last_error,
            }
            for delivery in found
        ]
