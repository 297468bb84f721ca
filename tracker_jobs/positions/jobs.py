"""Jobs of the positions queue: thin calls into the position service."""

from __future__ import annotations

from typing import Any

from tracker_jobs.positions.service import DrainResult, drain_partition, schedule_backlog
from tracker_jobs.queues import job


@job(timeout_s=600, max_tries=1000, keep_result_s=60)
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
    )
    return result.as_dict()


@job(timeout_s=60, max_tries=3)
async def sweep_position_partitions(ctx: dict[str, Any]) -> dict[str, Any]:
    """Safety net on the cron: start a drain for any partition with entries and none scheduled."""
    scheduled = await schedule_backlog(ctx["redis"], ctx["resources"].settings.position_partitions)
    return {"scheduled": scheduled}
