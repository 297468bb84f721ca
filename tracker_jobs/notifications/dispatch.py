"""Sending the outbox: claim a job's deliveries, say each through its channel (webhooks side by side,
one mail per recipient, one push per batch), and write what each try came to."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction
from tracker_jobs.core.principal import Role
from tracker_jobs.devices.models import UserDevice
from tracker_jobs.events.outbox import enqueue_deliveries
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.refs import DELIVER_NOTIFICATIONS
from tracker_jobs.notifications import web
from tracker_jobs.notifications.attempt import SENT, Attempt
from tracker_jobs.notifications.content import Context, load_context
from tracker_jobs.notifications.mail import build_message, parse_smtp_url, send_message
from tracker_jobs.notifications.messages import render
from tracker_jobs.notifications.outbox_state import claim, postpone, record
from tracker_jobs.notifications.webhook import post_signed

WEBHOOKS_AT_ONCE = 500  # a receiver taking 100 ms still gets thousands a second
MESSAGE_ID_PARTS = 8  # a digest's Message-ID names its first deliveries, then how many it holds


def delivery_key(delivery_id: int) -> str:
    """The stable id a receiver sees on every try of one delivery (X-Tracker-Delivery, Message-ID)."""
    return f"d{delivery_id}"


def mail_window_key(user_id: int) -> str:
    return f"tracker:mail-window:{user_id}"


@dataclass
class Sent:
    """What one job's tries came to, by delivery id; and the mail held for a recipient's digest."""

    outcomes: dict[int, Attempt] = field(default_factory=dict)
    held: dict[int, tuple[list[int], datetime]] = field(default_factory=dict)  # user -> (deliveries, until)

    def counts(self) -> dict[str, int]:
        sent = sum(1 for attempt in self.outcomes.values() if attempt.ok)
        dead = sum(1 for attempt in self.outcomes.values() if attempt.permanent)
        return {
            "sent": sent,
            "failed": len(self.outcomes) - sent - dead,
            "dead": dead,
            "held": sum(len(ids) for ids, _ in self.held.values()),
        }


async def deliver(
    redis: ArqRedis,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    client: aiohttp.ClientSession,
    now: datetime,
    *,
    delivery_ids: Sequence[int] | None = None,
    mail_user_id: int | None = None,
    digest: bool = True,
) -> dict[str, int]:
    """Try the due deliveries among `delivery_ids` (or a recipient's held mail, for its digest) once;
    `digest=False` sends mail at once, whatever the recipient's digest window."""
    async with transaction(sessions) as session:  # the leases commit before anything is sent
        if mail_user_id is not None:
            claimed = await claim(session, now, user_id=mail_user_id, channel="mail")
        else:
            claimed = await claim(session, now, ids=delivery_ids or [])
        if not claimed:
            return {"claimed": 0}
        context = await load_context(session, claimed)
        allowed = await _allowed(session, context, claimed)
    result = Sent()
    ready = []
    for delivery in claimed:
        refusal = _refusal(context, allowed, delivery)
        if refusal is None:
            ready.append(delivery)
        else:
            result.outcomes[delivery["id"]] = refusal
    by_channel: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for delivery in ready:
        by_channel[delivery["channel"]].append(delivery)
    await asyncio.gather(
        _push(redis, context, by_channel["web"], result),
        _post(client, context, by_channel["webhook"], result),
        _mail(
            redis, settings if digest else replace(settings, mail_digest_s=0), context, by_channel["mail"], now, result
        ),
    )
    async with transaction(sessions) as session:
        retries = await record(
            session,
            claimed,
            result.outcomes,
            now,
            retry_for_s=settings.delivery_retry_s,
            backoff_base_s=settings.delivery_backoff_s,
        )
        for ids, until in result.held.values():
            await postpone(session, ids, until)
    for delay, ids in retries.items():
        await enqueue_deliveries(redis, ids, defer_s=delay)
    for user_id, (_, until) in result.held.items():
        # One job per recipient and window: the first to end the window sends all that waited.
        job_id = f"mail-digest:{user_id}:{until.timestamp():.0f}"
        wait = max((until - now).total_seconds(), 0.0)
        await enqueue(redis, DELIVER_NOTIFICATIONS, job_id=job_id, defer_s=wait, mail_user_id=user_id)
    return {"claimed": len(claimed), **result.counts()}


async def _allowed(session: AsyncSession, context: Context, claimed: list[Mapping[str, Any]]) -> set[tuple[int, int]]:
    """The (user, device) pairs among the deliveries that the user may still see."""
    users = {d["user_id"] for d in claimed if d["device_id"] is not None}
    devices = {d["device_id"] for d in claimed if d["device_id"] is not None}
    if not users:
        return set()
    query = select(col(UserDevice.user_id), col(UserDevice.device_id)).where(
        col(UserDevice.user_id).in_(users), col(UserDevice.device_id).in_(devices)
    )
    pairs = {(user, device) for user, device in (await session.execute(query)).all()}
    admins = [user_id for user_id in users if (user := context.users.get(user_id)) and user.role == Role.ADMIN]
    return pairs | {(admin, device) for admin in admins for device in devices}


def _refusal(context: Context, allowed: set[tuple[int, int]], delivery: Mapping[str, Any]) -> Attempt | None:
    """Why the delivery may no longer go out at all (dead at once), or None."""
    user = context.users.get(delivery["user_id"])
    if user is None or user.disabled:
        return Attempt(ok=False, permanent=True, error="the recipient is disabled")
    if delivery["notification_id"] is None or delivery["notification_id"] not in context.notifications:
        return Attempt(ok=False, permanent=True, error="the notification was deleted")
    if delivery["device_id"] is not None and (user.id, delivery["device_id"]) not in allowed:
        return Attempt(ok=False, permanent=True, error="the recipient may no longer see the device")
    return None


async def _push(redis: ArqRedis, context: Context, deliveries: list[Mapping[str, Any]], result: Sent) -> None:
    if not deliveries:
        return
    messages = [(d["user_id"], {**context.item(d)["event"], "deliveryId": delivery_key(d["id"])}) for d in deliveries]
    try:
        await web.push(redis, messages)
        attempt = SENT
    except Exception as error:  # Redis away: every one of them is tried again
        attempt = Attempt(ok=False, error=f"web push: {error}")
    result.outcomes.update({d["id"]: attempt for d in deliveries})


def webhook_body(context: Context, delivery: Mapping[str, Any]) -> bytes:
    """`{event, device, position, geofence?, maintenance?, notification, deliveryId}` as JSON."""
    item = context.item(delivery)
    notification = context.notifications[delivery["notification_id"]]
    body: dict[str, Any] = {
        "event": item["event"],
        "device": item["device"],
        "position": item["position"],
        "notification": {"id": notification.id, "type": notification.type, "description": notification.description},
        "deliveryId": delivery_key(delivery["id"]),
    }
    for optional in ("geofence", "maintenance"):
        if item[optional] is not None:
            body[optional] = item[optional]
    return orjson.dumps(body)


async def _post(
    client: aiohttp.ClientSession, context: Context, deliveries: list[Mapping[str, Any]], result: Sent
) -> None:
    gate = asyncio.Semaphore(WEBHOOKS_AT_ONCE)

    async def post(delivery: Mapping[str, Any]) -> None:
        attributes = context.notifications[delivery["notification_id"]].attributes
        url, secret = attributes.get("webhookUrl"), attributes.get("webhookSecret")
        if not isinstance(url, str):
            result.outcomes[delivery["id"]] = Attempt(ok=False, permanent=True, error="no webhookUrl is set")
            return
        async with gate:
            result.outcomes[delivery["id"]] = await post_signed(
                client,
                url,
                webhook_body(context, delivery),
                secret=secret if isinstance(secret, str) and secret else None,
                delivery_id=delivery_key(delivery["id"]),
            )

    await asyncio.gather(*(post(delivery) for delivery in deliveries))


async def _mail(
    redis: ArqRedis,
    settings: Settings,
    context: Context,
    deliveries: list[Mapping[str, Any]],
    now: datetime,
    result: Sent,
) -> None:
    """One message per recipient: a digest of all their mail due now. A recipient mailed within the
    digest window has this mail held until the window ends, then gets everything held as one."""
    if not deliveries:
        return
    if settings.smtp_url is None:
        refused = Attempt(ok=False, permanent=True, error="no SMTP server is configured (TRACKER_SMTP_URL)")
        result.outcomes.update({d["id"]: refused for d in deliveries})
        return
    target = parse_smtp_url(settings.smtp_url)
    by_user: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for delivery in deliveries:
        by_user[delivery["user_id"]].append(delivery)

    async def mail(user_id: int, theirs: list[Mapping[str, Any]]) -> None:
        if settings.mail_digest_s > 0:
            window_ms = settings.mail_digest_s * 1000
            if not await redis.set(mail_window_key(user_id), "1", nx=True, px=window_ms):
                left_ms = max(await redis.pttl(mail_window_key(user_id)), 0)
                result.held[user_id] = ([d["id"] for d in theirs], now + timedelta(milliseconds=left_ms + 50))
                return
        user = context.users[user_id]
        theirs.sort(key=lambda d: (d["event_time"], d["id"]))
        zone = user.attributes.get("timezone") if isinstance(user.attributes.get("timezone"), str) else None
        subject, text, html = render(
            [context.item(d) for d in theirs], timezone=zone or settings.timezone, public_url=settings.public_url
        )
        keys = [delivery_key(d["id"]) for d in theirs]
        message_id = "-".join(keys[:MESSAGE_ID_PARTS]) + (f"-n{len(keys)}" if len(keys) > MESSAGE_ID_PARTS else "")
        try:
            message = build_message(
                sender=settings.mail_from, to=user.email, subject=subject, text=text, html=html, message_id=message_id
            )
            message["X-Tracker-Deliveries"] = " ".join(keys)  # all of them, where the Message-ID names 8
        except ValueError as error:  # an address no server would take: trying again cannot help
            attempt = Attempt(ok=False, permanent=True, error=f"mail: {error}")
        else:
            attempt = await send_message(target, message)
        result.outcomes.update({d["id"]: attempt for d in theirs})

    await asyncio.gather(*(mail(user_id, theirs) for user_id, theirs in by_user.items()))
