"""Jobs of the cleanup queue."""

from __future__ import annotations

from typing import Any

from tracker_jobs.core.db import transaction
from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import job
from tracker_jobs.jobs.resources import resources
from tracker_jobs.users.service import delete_expired_sessions


@job(refs.CLEANUP_EXPIRED_SESSIONS, timeout_s=300)
async def cleanup_expired_sessions(ctx: dict[str, Any]) -> dict[str, Any]:
    """Remove login sessions whose expiry has passed."""
    async with transaction(resources(ctx).sessions) as session:
        removed = await delete_expired_sessions(session)
    return {"removed": removed}
