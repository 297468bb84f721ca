"""Jobs of the notifications queue."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import orjson

from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.events.outbox import enqueue_deliveries
from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import enqueue, job
from tracker_jobs.jobs.resources import resources
from tracker_jobs.monitor.alerts import SEVERITIES, check_alerts, plan_alert_deliveries
from tracker_jobs.notifications.channels import DeliveryFailed
from tracker_jobs.notifications.dispatch import deliver
from tracker_jobs.notifications.outbox_state import lost
from tracker_jobs.notifications.summaries import daily_summary, due_users
from tracker_jobs.notifications.tasks import (
    RowFor,
    geofence_alert,
    maintenance_reminder,
    offline_alert,
    record_alert,
    speed_alert,
)
from tracker_jobs.notifications.webhook import post_signed, webhook_client
from tracker_jobs.positions.stream import SET_ASIDE_KEY

WEBHOOK_CLIENT = "webhook_client"  # the key of the worker process's shared session in resources().caches


def shared_webhook_client(ctx: dict[str, Any]) -> aiohttp.ClientSession:
    """The worker process's one webhook session, made on first use from its settings."""
    shared = resources(ctx)
    client: aiohttp.ClientSession | None = shared.caches.get(WEBHOOK_CLIENT)
    if client is None or client.closed:
        settings = shared.settings
        client = webhook_client(allow_private=settings.webhook_allow_private, timeout_s=settings.webhook_timeout_s)
        shared.caches[WEBHOOK_CLIENT] = client
    return client


@job(refs.SEND_WEBHOOK, timeout_s=60, max_tries=8)
async def send_webhook(ctx: dict[str, Any], url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Deliver one notification to a webhook: retried with backoff while the receiver fails for now (a
    timeout, a 5xx, 408 or 429); dead at once when trying again cannot help (another 4xx, a refused
    address). Every try carries the same delivery id (the job's), for the receiver to see repeats."""
    delivery_id = str(ctx.get("job_id") or uuid.uuid4().hex)
    attempt = await post_signed(
        shared_webhook_client(ctx), url, orjson.dumps(payload), secret=None, delivery_id=delivery_id
    )
    if attempt.ok:
        return {"url": url, "status": "sent"}
    if attempt.permanent:
        return {"url": url, "status": "dead", "error": attempt.error}
    raise DeliveryFailed(f"webhook {url}: {attempt.error}")


@job(refs.DELIVER_NOTIFICATIONS, timeout_s=60, max_tries=3)
async def deliver_notifications(
    ctx: dict[str, Any], delivery_ids: list[int] | None = None, mail_user_id: int | None = None
) -> dict[str, Any]:
    """Try the outbox's deliveries once (a failure is retried by the outbox's own backoff, not arq's),
    or send a recipient's held mail as one digest."""
    shared = resources(ctx)
    return await deliver(
        ctx["redis"],
        shared.sessions,
        shared.settings,
        shared_webhook_client(ctx),
        utcnow(),
        delivery_ids=delivery_ids,
        mail_user_id=mail_user_id,
    )


@job(refs.SWEEP_DELIVERIES, timeout_s=60, max_tries=1)
async def sweep_deliveries(ctx: dict[str, Any]) -> dict[str, Any]:
    """The cron safety net: hand the queue every due delivery nobody has claimed for a while."""
    async with resources(ctx).sessions() as session:
        found = await lost(session, utcnow())
    await enqueue_deliveries(ctx["redis"], found)
    return {"enqueued": len(found)}


async def _alert(ctx: dict[str, Any], row_for: RowFor, device_id: int) -> dict[str, Any]:
    """Record the event, write its deliveries, send them now."""
    shared = resources(ctx)
    now = utcnow()
    recorded = await record_alert(shared.sessions, row_for, device_id, now, shared.settings.notify_max_age_s)
    sent = await deliver(
        ctx["redis"],
        shared.sessions,
        shared.settings,
        shared_webhook_client(ctx),
        now,
        delivery_ids=recorded.deliveries,
    )
    return {"eventIds": recorded.events, "deliveries": len(recorded.deliveries), **sent}


@job(refs.SEND_GEOFENCE_ALERT, timeout_s=60, max_tries=3)
async def send_geofence_alert(
    ctx: dict[str, Any], device_id: int, geofence_id: int, event_type: str, position_data: dict[str, Any] | None = None
) -> dict[str, Any]:
    if event_type not in ("enter", "exit"):
        raise ValueError(f"event_type: expected enter or exit, got {event_type!r}")
    return await _alert(ctx, geofence_alert(geofence_id, event_type, position_data, utcnow()), device_id)


@job(refs.SEND_DEVICE_OFFLINE_ALERT, timeout_s=60, max_tries=3)
async def send_device_offline_alert(
    ctx: dict[str, Any], device_id: int, offline_duration_minutes: int = 0
) -> dict[str, Any]:
    return await _alert(ctx, offline_alert(offline_duration_minutes, utcnow()), device_id)


@job(refs.SEND_SPEED_ALERT, timeout_s=60, max_tries=3)
async def send_speed_alert(
    ctx: dict[str, Any], device_id: int, speed: float, speed_limit: float, position_data: dict[str, Any] | None = None
) -> dict[str, Any]:
    return await _alert(ctx, speed_alert(speed, speed_limit, position_data, utcnow()), device_id)


@job(refs.SEND_MAINTENANCE_REMINDER, timeout_s=60, max_tries=3)
async def send_maintenance_reminder(ctx: dict[str, Any], device_id: int, maintenance_id: int) -> dict[str, Any]:
    return await _alert(ctx, maintenance_reminder(maintenance_id, utcnow()), device_id)


async def _send_now(ctx: dict[str, Any], delivery_ids: list[int]) -> dict[str, Any]:
    """Try the deliveries just written once, now (what fails is retried by the outbox's backoff)."""
    if not delivery_ids:
        return {}
    shared = resources(ctx)
    client = shared_webhook_client(ctx)
    return await deliver(ctx["redis"], shared.sessions, shared.settings, client, utcnow(), delivery_ids=delivery_ids)


@job(refs.SEND_DAILY_SUMMARY, timeout_s=600, max_tries=3)
async def send_daily_summary(ctx: dict[str, Any], recipient_id: int) -> dict[str, Any]:
    """The user's summary of their local yesterday, per device they may see, to each channel of their
    dailySummary notifications: written once per user and date (a second run sends nothing new), sent now.
    (`recipient_id`, not `user_id`: enqueue's `user_id` names who started a job.)"""
    shared = resources(ctx)
    summary = await daily_summary(shared.sessions, shared.settings, recipient_id, utcnow())
    sent = await _send_now(ctx, summary.deliveries)
    return {**summary.as_result(), "deliveries": len(summary.deliveries), **sent}


@job(refs.SEND_DAILY_SUMMARIES, timeout_s=300, max_tries=3)
async def send_daily_summaries(ctx: dict[str, Any]) -> dict[str, Any]:
    """The hourly cron: a send_daily_summary for each user whose local hour is TRACKER_DAILY_SUMMARY_HOUR
    (one job id per user and date, so a tick run again enqueues nothing twice)."""
    shared = resources(ctx)
    async with shared.sessions() as session:
        due = await due_users(session, shared.settings, utcnow())
    enqueued = 0
    for user_id, day in due:
        job_id = f"daily-summary:{user_id}:{day}"
        if await enqueue(ctx["redis"], refs.SEND_DAILY_SUMMARY, job_id=job_id, recipient_id=user_id) is not None:
            enqueued += 1
    return {"due": len(due), "enqueued": enqueued}


@job(refs.SEND_SYSTEM_ALERT, timeout_s=60, max_tries=3)
async def send_system_alert(ctx: dict[str, Any], kind: str, message: str, severity: str = "warning") -> dict[str, Any]:
    """Tell every enabled admin with a systemAlert notification (by its channels) that an alert opened."""
    if not kind.strip():
        raise ValueError("kind: must not be empty")
    if severity not in SEVERITIES:
        raise ValueError(f"severity: expected one of {', '.join(SEVERITIES)}, got {severity!r}")
    shared = resources(ctx)
    attributes = {"kind": kind, "message": message, "severity": severity, "state": "opened"}
    async with transaction(shared.sessions) as session:
        written = await plan_alert_deliveries(session, [attributes], utcnow())
    return {"deliveries": len(written), **await _send_now(ctx, written)}


@job(refs.CHECK_SYSTEM_ALERTS, timeout_s=50, max_tries=1)
async def check_system_alerts(ctx: dict[str, Any]) -> dict[str, Any]:
    """The minutely cron: judge the engine's health (monitor/alerts.py) and tell the admins of each alert
    that opened or resolved since the last check, once (an alert that stays open says nothing more)."""
    shared = resources(ctx)
    now = utcnow()
    transitions = await check_alerts(ctx["redis"], shared.sessions, shared.settings, now, set_aside_key=SET_ASIDE_KEY)
    result: dict[str, Any] = {
        "opened": [t.alert.kind for t in transitions if t.state == "opened"],
        "resolved": [t.alert.kind for t in transitions if t.state == "resolved"],
    }
    if not transitions:
        return result
    async with transaction(shared.sessions) as session:
        written = await plan_alert_deliveries(session, [t.attributes() for t in transitions], now)
    return {**result, "deliveries": len(written), **await _send_now(ctx, written)}
