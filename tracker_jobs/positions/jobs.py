"""Jobs of the positions queue: thin calls into the position service."""

from __future__ import annotations

from typing import Any

from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.devices.status import refresh_statuses
from tracker_jobs.positions.batch import resolve_batch
from tracker_jobs.positions.live import publish_devices
from tracker_jobs.positions.pipeline import PipelineConfig
from tracker_jobs.positions.service import DrainResult, accept_positions, drain_partition, schedule_backlog
from tracker_jobs.queues import job
from tracker_jobs.users.models import Role
from tracker_jobs.users.service import Principal

# Jobs act for the engine itself: every device is theirs.
SYSTEM = Principal(user_id=0, role=Role.ADMIN)


@job(timeout_s=120, max_tries=1000, keep_result_s=60)
async def process_position_batch(ctx: dict[str, Any], partition: int) -> dict[str, Any]:
    """Store everything waiting in one partition's stream. Retried until the database answers:
    the entries stay in Redis until they are stored, so retrying loses nothing."""
    resources = ctx["resources"]
    result: DrainResult = await drain_partition(
        ctx["redis"],
        resources.sessions,
        partition,
        consumer=resources.consumer,
        batch_size=resources.settings.position_batch_size,
        config=PipelineConfig.from_settings(resources.settings),
    )
    return result.as_dict()


@job(timeout_s=60, max_tries=3)
async def process_single_position(ctx: dict[str, Any], position: dict[str, Any]) -> dict[str, Any]:
    """One position in Traccar's shape (deviceId or uniqueId), put on the same batch path as all others."""
    resources = ctx["resources"]
    async with resources.sessions() as session:
        answer = await resolve_batch(
            session, SYSTEM, [position], now=utcnow(), auto_register=resources.settings.auto_register
        )
    if answer.accepted:
        partitions = resources.settings.position_partitions
        items = [(device_id, position, None) for device_id, position in answer.accepted]
        answer.task_ids = list((await accept_positions(ctx["redis"], partitions, items, utcnow())).job_ids.values())
    return answer.as_dict()


@job(timeout_s=60, max_tries=3)
async def sweep_position_partitions(ctx: dict[str, Any]) -> dict[str, Any]:
    """The cron safety net: start a drain for any partition with entries and none scheduled, and move
    silent devices to unknown, then offline."""
    settings = ctx["resources"].settings
    scheduled = await schedule_backlog(ctx["redis"], list(range(settings.position_partitions)))
    async with transaction(ctx["resources"].sessions) as session:
        changes = await refresh_statuses(
            session, utcnow(), settings.device_unknown_after_s, settings.device_offline_after_s
        )
    await publish_devices(ctx["redis"], changes)
    return {"scheduled": scheduled, "statusChanges": len(changes)}
