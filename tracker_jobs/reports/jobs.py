"""Jobs of the reports queue: thin calls into the report service."""

from __future__ import annotations

from typing import Any

from tracker_jobs.core.db import utcnow
from tracker_jobs.core.fields import parse_time
from tracker_jobs.jobs import refs
from tracker_jobs.jobs.base import job
from tracker_jobs.jobs.progress import report_progress
from tracker_jobs.jobs.resources import resources
from tracker_jobs.reports import daily, service
from tracker_jobs.reports.builders import DEVICE_KINDS, Progress, ReportRequest


def _progress(ctx: dict[str, Any], unit: str) -> Progress:
    async def progress(done: int, total: int) -> None:
        await report_progress(ctx, done, total, f"{done}/{total} {unit}")

    return progress


@job(refs.GENERATE_DEVICE_REPORT, timeout_s=3600, max_tries=3)
async def generate_device_report(
    ctx: dict[str, Any],
    device_id: int,
    start: str,
    end: str,
    kind: str = "summary",
    report_id: int | None = None,
    daily: bool = False,
    event_types: list[str] | None = None,
    formats: list[str] | None = None,
) -> dict[str, Any]:
    """One device's report (summary, detailed, route, trips, stops, events) into the reports table.

    With `report_id` (as the API enqueues it) the report's stored parameters are run; without, a report
    is recorded from these arguments first.
    """
    shared = resources(ctx)
    if report_id is None:
        request = ReportRequest(
            kind=service.check_kind(kind, DEVICE_KINDS),
            device_ids=(device_id,),
            start=parse_time("start", start),
            end=parse_time("end", end),
            daily=daily,
            event_types=tuple(event_types or ()),
        )
        report_id = await service.report_for_task(
            shared.sessions, shared.settings, ctx["job_id"], request, service.check_formats(formats)
        )
    return await service.run_report(
        shared.sessions, shared.settings, report_id, ctx["job_id"], _progress(ctx, "devices")
    )


@job(refs.GENERATE_FLEET_REPORT, timeout_s=3600, max_tries=3)
async def generate_fleet_report(
    ctx: dict[str, Any],
    start: str,
    end: str,
    device_ids: list[int] | None = None,
    report_id: int | None = None,
    formats: list[str] | None = None,
) -> dict[str, Any]:
    """Summary, trips and stops of many devices (all of them when `device_ids` is None) plus fleet totals."""
    shared = resources(ctx)
    if report_id is None:
        ids = device_ids if device_ids is not None else await service.all_device_ids(shared.sessions)
        request = ReportRequest(
            kind="fleet",
            device_ids=tuple(ids),
            start=parse_time("start", start),
            end=parse_time("end", end),
        )
        report_id = await service.report_for_task(
            shared.sessions, shared.settings, ctx["job_id"], request, service.check_formats(formats)
        )
    return await service.run_report(
        shared.sessions, shared.settings, report_id, ctx["job_id"], _progress(ctx, "devices")
    )


@job(refs.EXPORT_REPORT_DATA, timeout_s=3600, max_tries=3)
async def export_report_data(ctx: dict[str, Any], report_id: int, format: str) -> dict[str, Any]:
    """A complete report's file in another format (csv, xlsx), made from its stored JSON."""
    return await service.export_report(resources(ctx).sessions, report_id, format)


@job(refs.GENERATE_DAILY_REPORTS, timeout_s=6 * 3600, max_tries=3)
async def generate_daily_reports(ctx: dict[str, Any]) -> dict[str, Any]:
    """On the midnight cron: yesterday's summary and trips for every user's devices."""
    shared = resources(ctx)
    return await daily.generate_daily_reports(
        shared.sessions, shared.settings, utcnow(), ctx["job_id"], _progress(ctx, "users")
    )
