"""Jobs on devices (positions queue): status and statistics, thin calls into the device services."""

from __future__ import annotations

from typing import Any

from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.core.fields import parse_time
from tracker_jobs.devices.statistics import device_statistics, today_range
from tracker_jobs.devices.status import refresh_statuses
from tracker_jobs.positions.live import publish_devices
from tracker_jobs.queues import job


@job(timeout_s=60, max_tries=5)
async def update_device_status(ctx: dict[str, Any], device_id: int) -> dict[str, Any]:
    """Recompute one device's online/unknown/offline status from how long it has been silent."""
    settings = ctx["resources"].settings
    async with transaction(ctx["resources"].sessions) as session:
        changes = await refresh_statuses(
            session, utcnow(), settings.device_unknown_after_s, settings.device_offline_after_s, device_ids=[device_id]
        )
    await publish_devices(ctx["redis"], changes)
    return {"deviceId": device_id, "changed": [change["status"] for change in changes]}


@job(timeout_s=300, max_tries=5)
async def calculate_device_statistics(
    ctx: dict[str, Any], device_id: int, start: str | None = None, end: str | None = None
) -> dict[str, Any]:
    """Today's statistics (or those of start..end, ISO-8601), computed afresh and cached for the API."""
    settings = ctx["resources"].settings
    if start is None or end is None:
        begin, finish = today_range(utcnow(), settings.timezone)
    else:
        begin, finish = parse_time("start", start), parse_time("end", end)
    async with ctx["resources"].sessions() as session:
        return await device_statistics(
            session, ctx["redis"], device_id, begin, finish, settings.motion_speed_kn, refresh=True
        )
