"""Jobs of the monitor: removing old job records, and a no-op that shows a queue is served end to end."""

from __future__ import annotations

import asyncio
from typing import Any

from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import job
from tracker_jobs.jobs.progress import report_progress
from tracker_jobs.jobs.resources import resources
from tracker_jobs.monitor.service import delete_old_records

MAX_PING_SECONDS = 3600.0
MAX_PING_STEPS = 1000


@job(refs.CLEANUP_JOB_RECORDS, timeout_s=1800, max_tries=3)
async def cleanup_job_records(ctx: dict[str, Any]) -> dict[str, Any]:
    """Remove finished job records older than TRACKER_JOB_RECORD_RETENTION_DAYS, a batch at a time."""
    shared = resources(ctx)
    removed = await delete_old_records(shared.sessions, shared.settings.job_record_retention_days)
    return {"removed": removed}


@job(refs.PING, timeout_s=int(MAX_PING_SECONDS) + 60, max_tries=1)
async def ping(ctx: dict[str, Any], seconds: float = 0.0, steps: int = 1) -> dict[str, Any]:
    """Do nothing for `seconds`, reporting progress in `steps`: checks that a worker serves the queue,
    and shows progress and cancelling at work."""
    if not 0 <= seconds <= MAX_PING_SECONDS:
        raise ValueError(f"seconds: must be from 0 to {MAX_PING_SECONDS:.0f}")
    if not 1 <= steps <= MAX_PING_STEPS:
        raise ValueError(f"steps: must be from 1 to {MAX_PING_STEPS}")
    for step in range(steps):
        if seconds:
            await asyncio.sleep(seconds / steps)
        if steps > 1:
            await report_progress(ctx, step + 1, steps, f"step {step + 1} of {steps}")
    return {"slept": seconds, "steps": steps}
