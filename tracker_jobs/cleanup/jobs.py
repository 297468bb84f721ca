"""Jobs of the cleanup queue: thin, over the service modules beside them. Each takes `dry_run` (count,
remove nothing), reports progress between its chunks, and may be cancelled there (arq aborts the job at
its next await: the chunk in flight rolls back, the ones before it stand)."""

from __future__ import annotations

import functools
from typing import Any

from tracker_jobs.cleanup import cache, duplicates, optimize, orphans, retention
from tracker_jobs.cleanup.arguments import check_days, check_device_ids
from tracker_jobs.cleanup.chunks import CleanupRun
from tracker_jobs.cleanup.partitions import ensure_partitions
from tracker_jobs.core.db import transaction, utcnow
from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import job
from tracker_jobs.jobs.progress import report_progress
from tracker_jobs.jobs.resources import resources
from tracker_jobs.users.service import delete_expired_sessions

# Long enough for a first run over a large backlog; a run stopped by it is carried on by the next.
LONG_S = 6 * 3600


def _run(ctx: dict[str, Any], dry_run: bool) -> CleanupRun:
    return CleanupRun(progress=functools.partial(report_progress, ctx), dry_run=dry_run)


@job(refs.CLEANUP_OLD_POSITIONS, timeout_s=LONG_S, max_tries=3)
async def cleanup_old_positions(
    ctx: dict[str, Any], days_to_keep: int | None = None, device_ids: list[int] | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Positions older than `days_to_keep` days (default TRACKER_RETENTION_POSITIONS_DAYS; a device's
    `retentionDays` attribute overrides it), each device's newest kept."""
    shared = resources(ctx)
    days = check_days(days_to_keep, shared.settings.retention_positions_days)
    await check_device_ids(shared.sessions, device_ids)
    return await retention.remove_old_positions(
        shared.sessions, ctx["redis"], _run(ctx, dry_run), now=utcnow(), days_to_keep=days, device_ids=device_ids
    )


@job(refs.CLEANUP_OLD_EVENTS, timeout_s=LONG_S, max_tries=3)
async def cleanup_old_events(
    ctx: dict[str, Any], days_to_keep: int | None = None, device_ids: list[int] | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Events (and their deliveries) older than `days_to_keep` days (default TRACKER_RETENTION_EVENTS_DAYS)."""
    shared = resources(ctx)
    days = check_days(days_to_keep, shared.settings.retention_events_days)
    await check_device_ids(shared.sessions, device_ids)
    return await retention.remove_old_events(
        shared.sessions, ctx["redis"], _run(ctx, dry_run), now=utcnow(), days_to_keep=days, device_ids=device_ids
    )


@job(refs.CLEANUP_EXPIRED_SESSIONS, timeout_s=300)
async def cleanup_expired_sessions(ctx: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """Remove login sessions whose expiry has passed."""
    run = _run(ctx, dry_run)
    async with run.step("delete"), transaction(resources(ctx).sessions) as session:
        run.count("sessions", await delete_expired_sessions(session, dry_run=dry_run))
    return run.result()


@job(refs.CLEANUP_CACHE, timeout_s=3600, max_tries=3)
async def cleanup_cache(
    ctx: dict[str, Any], pattern: str = "*", max_age_hours: float = 24, dry_run: bool = False
) -> dict[str, Any]:
    """The engine's cache keys (only they: the pattern applies inside the cache namespace) idle at least
    `max_age_hours`, and the live state of deleted devices."""
    return await cache.clean_cache(
        ctx["redis"], resources(ctx).sessions, _run(ctx, dry_run), pattern=pattern, max_age_hours=max_age_hours
    )


@job(refs.CLEANUP_DUPLICATE_POSITIONS, timeout_s=LONG_S, max_tries=3)
async def cleanup_duplicate_positions(
    ctx: dict[str, Any], device_ids: list[int] | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Positions of a device that repeat another (same second, same place), the one its state names kept."""
    shared = resources(ctx)
    await check_device_ids(shared.sessions, device_ids)
    return await duplicates.clean_duplicate_positions(shared.sessions, _run(ctx, dry_run), device_ids=device_ids)


@job(refs.CLEANUP_ORPHANED_DATA, timeout_s=LONG_S, max_tries=3)
async def cleanup_orphaned_data(ctx: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """Rows that point at something gone, and set-aside positions older than the positions' retention."""
    shared = resources(ctx)
    return await orphans.clean_orphans(
        shared.sessions,
        ctx["redis"],
        _run(ctx, dry_run),
        set_aside_days=shared.settings.retention_positions_days,
    )


@job(refs.OPTIMIZE_DATABASE, timeout_s=LONG_S, max_tries=1)
async def optimize_database(ctx: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """VACUUM (ANALYZE) of the big tables on PostgreSQL (never waiting behind writers); PRAGMA optimize
    and incremental vacuum on SQLite."""
    return await optimize.optimize_database(resources(ctx).engine, _run(ctx, dry_run))


@job(refs.CREATE_PARTITIONS, timeout_s=600, max_tries=5)
async def create_partitions(ctx: dict[str, Any]) -> dict[str, Any]:
    """Make the coming days' position partitions and weeks' event partitions (PostgreSQL), and say how
    full the default ones are."""
    return await ensure_partitions(resources(ctx).sessions, ctx["redis"], utcnow().date())
