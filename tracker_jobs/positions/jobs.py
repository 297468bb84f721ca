"""Jobs of the positions queue: thin calls into the position and device services."""

from __future__ import annotations

import asyncio
from typing import Any

from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.core.fields import parse_time
from tracker_jobs.core.principal import Principal, Role
from tracker_jobs.devices.status import refresh_statuses
from tracker_jobs.events.outbox import enqueue_deliveries
from tracker_jobs.events.status import inactivity_events, maintenance_date_events, status_events
from tracker_jobs.events.store import record_events
from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import job
from tracker_jobs.jobs.resources import resources
from tracker_jobs.positions.batch import resolve_batch
from tracker_jobs.positions.geofencing import ShapeCache
from tracker_jobs.positions.live import publish_devices
from tracker_jobs.positions.pipeline import PipelineConfig
from tracker_jobs.positions.service import (
    DrainResult,
    accept_positions,
    batch_gate,
    drain_partition,
    schedule_backlog,
)
from tracker_jobs.positions.statistics import device_statistics, today_range

# Jobs act for the engine itself: every device is theirs.
SYSTEM = Principal(user_id=0, role=Role.ADMIN)


@job(refs.PROCESS_POSITION_BATCH, timeout_s=120, max_tries=1000, keep_result_s=60)
async def process_position_batch(ctx: dict[str, Any], partition: int) -> dict[str, Any]:
    """Store everything waiting in one partition's stream. Retried until the database answers:
    the entries stay in Redis until they are stored, so retrying loses nothing."""
    shared = resources(ctx)
    result: DrainResult = await drain_partition(
        ctx["redis"],
        shared.sessions,
        partition,
        consumer=shared.consumer,
        batch_size=shared.settings.position_batch_size,
        config=PipelineConfig.from_settings(shared.settings),
        shapes=shape_cache(ctx),
        gate=drain_gate(ctx),
    )
    return result.as_dict()


def drain_gate(ctx: dict[str, Any]) -> asyncio.Semaphore:
    """The worker process's one gate for all its drains (made in its running event loop)."""
    caches = resources(ctx).caches
    if "drain_gate" not in caches:
        caches["drain_gate"] = batch_gate()
    gate: asyncio.Semaphore = caches["drain_gate"]
    return gate


def shape_cache(ctx: dict[str, Any]) -> ShapeCache:
    """The worker process's parsed geofences, kept between drains (a job's ctx is its own copy)."""
    cache: ShapeCache = resources(ctx).caches.setdefault("geofence_shapes", ShapeCache())
    return cache


@job(refs.PROCESS_SINGLE_POSITION, timeout_s=60, max_tries=3)
async def process_single_position(ctx: dict[str, Any], position: dict[str, Any]) -> dict[str, Any]:
    """One position in Traccar's shape (deviceId or uniqueId), put on the same batch path as all others."""
    shared = resources(ctx)
    async with shared.sessions() as session:
        answer = await resolve_batch(
            session, SYSTEM, [position], now=utcnow(), auto_register=shared.settings.auto_register
        )
    if answer.accepted:
        partitions = shared.settings.position_partitions
        items = [(position, None) for position in answer.accepted]
        answer.task_ids = list((await accept_positions(ctx["redis"], partitions, items, utcnow())).job_ids.values())
    return answer.as_dict()


@job(refs.SWEEP_POSITION_PARTITIONS, timeout_s=60, max_tries=3)
async def sweep_position_partitions(ctx: dict[str, Any]) -> dict[str, Any]:
    """The cron safety net: start a drain for any partition with entries and none scheduled, and move
    silent devices to unknown, then offline."""
    settings = resources(ctx).settings
    scheduled = await schedule_backlog(ctx["redis"], list(range(settings.position_partitions)))
    now = utcnow()
    async with transaction(resources(ctx).sessions) as session:
        changes = await refresh_statuses(session, now, settings.device_unknown_after_s, settings.device_offline_after_s)
        found = [*status_events(changes, now), *await inactivity_events(session, now)]
        found += await maintenance_date_events(session, now)
        recorded = await record_events(session, found, now, settings.notify_max_age_s)
    await publish_devices(ctx["redis"], changes)
    await enqueue_deliveries(ctx["redis"], recorded.deliveries)
    return {"scheduled": scheduled, "statusChanges": len(changes), "events": len(recorded.events)}


@job(refs.UPDATE_DEVICE_STATUS, timeout_s=60, max_tries=5)
async def update_device_status(ctx: dict[str, Any], device_id: int) -> dict[str, Any]:
    """Recompute one device's online/unknown/offline status from how long it has been silent."""
    settings = resources(ctx).settings
    async with transaction(resources(ctx).sessions) as session:
        changes = await refresh_statuses(
            session, utcnow(), settings.device_unknown_after_s, settings.device_offline_after_s, device_ids=[device_id]
        )
    await publish_devices(ctx["redis"], changes)
    return {"deviceId": device_id, "changed": [change["status"] for change in changes]}


@job(refs.CALCULATE_DEVICE_STATISTICS, timeout_s=300, max_tries=5)
async def calculate_device_statistics(
    ctx: dict[str, Any], device_id: int, start: str | None = None, end: str | None = None
) -> dict[str, Any]:
    """Today's statistics (or those of start..end, ISO-8601), computed afresh and cached for the API."""
    settings = resources(ctx).settings
    if start is None or end is None:
        begin, finish = today_range(utcnow(), settings.timezone)
    else:
        begin, finish = parse_time("start", start), parse_time("end", end)
    async with resources(ctx).sessions() as session:
        return await device_statistics(
            session, ctx["redis"], device_id, begin, finish, settings.motion_speed_kn, refresh=True
        )
