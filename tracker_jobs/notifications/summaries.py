"""Daily summaries: each user with a `dailySummary` notification hears, at `TRACKER_DAILY_SUMMARY_HOUR`
in their own time zone (the user's `timezone` attribute, else `TRACKER_TIMEZONE`), how each device it
covers did yesterday (every device they may see for an `always` notification, else its linked ones) (their local yesterday): distance, driving time, top speed and trips as the report
engine computes them (the `daily` report's summary and trips), and its events counted by type.

The summary is written as deliveries (one per channel of each of the user's dailySummary notifications)
at most once per user and local date: the check for an earlier one and the write happen in one
transaction that holds the user's row, so a cron tick run twice, or two workers, send one summary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import dialect_name, transaction
from tracker_jobs.core.principal import Principal
from tracker_jobs.core.trip_rule import trip_defaults
from tracker_jobs.events.models import Delivery, DeviceNotification, Event, Notification, UserNotification
from tracker_jobs.events.outbox import channels_of, plan_message
from tracker_jobs.reports.builders import ReportRequest, build_report
from tracker_jobs.reports.daily import yesterday
from tracker_jobs.reports.service import visible_devices_among
from tracker_jobs.users.models import User

DAILY_SUMMARY = "dailySummary"
EVENT_COUNT_CHUNK = 5_000  # device ids per events query (SQLite's limit on bound values is far above)
# An earlier summary is looked for among the user's deliveries this recent (a day plus any zone's offset).
LOOK_BACK = timedelta(days=3)

Recipient = tuple[int | None, int, str]


def zone_of(user: User, settings: Settings) -> str:
    """The user's IANA time zone, or TRACKER_TIMEZONE when they have none (or an unknown one)."""
    name = user.attributes.get("timezone")
    if isinstance(name, str) and name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return settings.timezone
        return name
    return settings.timezone


async def _summary_users(session: AsyncSession, user_ids: Sequence[int] | None = None) -> list[User]:
    """Enabled users linked to a dailySummary notification (all, or among `user_ids`), by id."""
    linked = sa.exists().where(
        col(UserNotification.user_id) == col(User.id),
        col(UserNotification.notification_id) == col(Notification.id),
        col(Notification.type) == DAILY_SUMMARY,
    )
    query = sa.select(User).where(col(User.disabled).is_(False), linked)
    if user_ids is not None:
        query = query.where(col(User.id).in_(list(user_ids)))
    return list((await session.execute(query.order_by(col(User.id)))).scalars())


async def due_users(session: AsyncSession, settings: Settings, now: datetime) -> list[tuple[int, str]]:
    """(user, the local date to summarise) for each user whose local hour is the summary hour now."""
    due = []
    for user in await _summary_users(session):
        assert user.id is not None
        zone = zone_of(user, settings)
        if now.astimezone(ZoneInfo(zone)).hour == settings.daily_summary_hour:
            due.append((user.id, yesterday(now, zone)[0]))
    return due


async def recipients_of(session: AsyncSession, user_id: int) -> list[Recipient]:
    """(notification, user, channel) for each channel of each of the user's dailySummary notifications."""
    query = (
        sa.select(col(Notification.id), col(Notification.notificators))
        .join(UserNotification, col(UserNotification.notification_id) == col(Notification.id))
        .where(col(UserNotification.user_id) == user_id, col(Notification.type) == DAILY_SUMMARY)
        .order_by(col(Notification.id))
    )
    return [
        (notification, user_id, channel)
        for notification, channels in (await session.execute(query)).all()
        for channel in channels_of(channels)
    ]


async def summary_devices(session: AsyncSession, principal: Principal) -> list[int]:
    """The devices the user's summary covers: every device they may see when one of their dailySummary
    notifications is `always`, else those linked to one of them (/api/permissions) that they may see."""
    query = (
        sa.select(col(Notification.id), col(Notification.always))
        .join(UserNotification, col(UserNotification.notification_id) == col(Notification.id))
        .where(col(UserNotification.user_id) == principal.user_id, col(Notification.type) == DAILY_SUMMARY)
    )
    notifications = (await session.execute(query)).all()
    visible = await visible_devices_among(session, principal, None)
    if any(always for _, always in notifications):
        return visible
    linked = sa.select(col(DeviceNotification.device_id)).where(
        col(DeviceNotification.notification_id).in_([notification for notification, _ in notifications])
    )
    covered = set((await session.execute(linked)).scalars())
    return [device_id for device_id in visible if device_id in covered]


async def event_counts(
    session: AsyncSession, device_ids: Sequence[int], start: datetime, end: datetime
) -> dict[int, dict[str, int]]:
    """device -> event type -> how many events in [start, end)."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    ids = list(device_ids)
    for first in range(0, len(ids), EVENT_COUNT_CHUNK):
        query = (
            sa.select(col(Event.device_id), col(Event.type), sa.func.count())
            .where(
                col(Event.device_id).in_(ids[first : first + EVENT_COUNT_CHUNK]),
                col(Event.event_time) >= start,
                col(Event.event_time) < end,
            )
            .group_by(col(Event.device_id), col(Event.type))
        )
        for device_id, event_type, number in (await session.execute(query)).all():
            counts[device_id][event_type] = int(number)
    return counts


async def device_summaries(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    device_ids: Sequence[int],
    start: datetime,
    end: datetime,
    zone: str,
) -> list[dict[str, Any]]:
    """Per device, by name: `{name, distance (m), drivingTime (s), maxSpeed (knots), trips, events}`,
    from the report engine's summary and trips of [start, end)."""
    built = await build_report(
        sessions, ReportRequest("daily", tuple(device_ids), start, end), trip_defaults(settings), zone
    )
    rows: dict[str, list[dict[str, Any]]] = {}
    for section in built.sections:
        rows[section.name] = [row async for chunk in section.chunks for row in chunk]
    trips: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for trip in rows["trips"]:
        trips[trip["deviceId"]].append(trip)
    async with sessions() as session:
        events = await event_counts(session, device_ids, start, end)
    devices = [
        {
            "name": summary["deviceName"],
            "distance": round(float(summary["distance"] or 0.0), 1),
            "drivingTime": sum(int(trip["duration"] or 0) for trip in trips[summary["deviceId"]]) // 1000,
            "maxSpeed": round(float(summary["maxSpeed"] or 0.0), 2),
            "trips": len(trips[summary["deviceId"]]),
            "events": dict(sorted(events.get(summary["deviceId"], {}).items())),
        }
        for summary in rows["summary"]
    ]
    return sorted(devices, key=lambda device: (str(device["name"]).casefold(), str(device["name"])))


async def _hold_user(session: AsyncSession, user_id: int) -> None:
    """Hold the user's row until the transaction ends: a second summary writer waits here, then sees the
    first one's deliveries. (SQLite has no FOR UPDATE: a write takes its database lock now instead.)"""
    if dialect_name(session) == "postgresql":
        await session.execute(sa.select(col(User.id)).where(col(User.id) == user_id).with_for_update())
    else:
        await session.execute(sa.update(User).where(col(User.id) == user_id).values(id=col(User.id)))


async def written_summary(session: AsyncSession, user_id: int, day: str, now: datetime) -> list[int]:
    """The deliveries of the user's summary of `day`, if it was written already."""
    query = sa.select(col(Delivery.id), col(Delivery.content)).where(
        col(Delivery.user_id) == user_id,
        col(Delivery.event_type) == DAILY_SUMMARY,
        col(Delivery.event_id).is_(None),
        col(Delivery.created_at) >= now - LOOK_BACK,
    )
    return sorted(
        delivery_id
        for delivery_id, content in (await session.execute(query)).all()
        if isinstance(content, Mapping) and (content.get("attributes") or {}).get("date") == day
    )


@dataclass
class Summary:
    """What one user's summary job came to."""

    user_id: int
    day: str | None = None
    deliveries: list[int] = field(default_factory=list)  # to send now (new, or left from an earlier try)
    written: bool = False  # this run wrote them
    skipped: str | None = None  # why nothing is sent

    def as_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {"userId": self.user_id, "date": self.day, "written": self.written}
        if self.skipped is not None:
            result["skipped"] = self.skipped
        return result


async def daily_summary(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, user_id: int, now: datetime
) -> Summary:
    """Write the user's summary of their local yesterday, once: a second run finds the first one's
    deliveries (and hands back those still to send, for a try that stopped before sending them)."""
    summary = Summary(user_id)
    async with sessions() as session:
        users = await _summary_users(session, [user_id])
        if not users:
            summary.skipped = "no enabled user with a dailySummary notification"
            return summary
        user = users[0]
        zone = zone_of(user, settings)
        summary.day, start, end = yesterday(now, zone)
        summary.deliveries = await written_summary(session, user_id, summary.day, now)
        if summary.deliveries:
            return summary
        device_ids = await summary_devices(session, Principal(user_id, user.role))
    if not device_ids:
        summary.skipped = "no devices"
        return summary
    devices = await device_summaries(sessions, settings, device_ids, start, end, zone)
    content = {"attributes": {"date": summary.day, "devices": devices}}
    async with transaction(sessions) as session:
        await _hold_user(session, user_id)
        summary.deliveries = await written_summary(session, user_id, summary.day, now)
        if not summary.deliveries:
            recipients = await recipients_of(session, user_id)
            summary.deliveries = await plan_message(session, recipients, DAILY_SUMMARY, content, now)
            summary.written = True
    return summary
