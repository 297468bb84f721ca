"""Reports: asking for one, running it into stored files, reading it back, direct answers, daily reports."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import AfterCommitFailed, iso, transaction, utcnow
from tracker_jobs.core.errors import Conflict, FieldError, Unavailable
from tracker_jobs.core.principal import Principal
from tracker_jobs.core.trip_rule import trip_defaults
from tracker_jobs.devices.models import Device
from tracker_jobs.devices.service import UnknownDevice, visible_device_ids
from tracker_jobs.jobs.base import enqueue, enqueue_after_commit
from tracker_jobs.jobs.progress import read_progress
from tracker_jobs.jobs.refs import EXPORT_REPORT_DATA, GENERATE_DEVICE_REPORT, GENERATE_FLEET_REPORT, JobRef
from tracker_jobs.reports import exporters, files
from tracker_jobs.reports.builders import (
    Progress,
    ReportRequest,
    build_report,
)
from tracker_jobs.reports.models import Report
from tracker_jobs.reports.sections import Section

ACTIVE = ("queued", "in_progress")
log = logging.getLogger(__name__)


class RangeTooLarge(ValueError):
    """Longer than a report may cover; the route says which status and field that is."""

    def __init__(self, days: float, limit: int) -> None:
        super().__init__(f"the range spans {days:g} days; at most {limit} are allowed")
        self.days = days
        self.limit = limit


class ReportNotReady(Conflict):
    def __init__(self, report_id: int, status: str) -> None:
        super().__init__(f"report {report_id} is {status}; download it once its status is complete")


@dataclass(frozen=True)
class Download:
    content_type: str
    size: int
    file_name: str
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class ExportQueued:
    task_id: str


@dataclass(frozen=True)
class ReportFileOnDisk:
    path: Path
    content_type: str
    file_name: str


def check_range(start: datetime, end: datetime, limit_days: int, *, start_field: str, end_field: str) -> None:
    if start >= end:
        raise FieldError(start_field, f"must be before {end_field}")
    days = (end - start) / timedelta(days=1)
    if days > limit_days:
        raise RangeTooLarge(round(days, 2), limit_days)


def check_kind(kind: object, allowed: Sequence[str]) -> str:
    if not isinstance(kind, str) or kind not in allowed:
        raise FieldError("kind", f"expected one of {', '.join(allowed)}, got {str(kind)[:40]!r}")
    return kind


def check_formats(formats: object) -> list[str]:
    """The requested formats (JSON is always made: the others are made from it)."""
    if formats is None:
        return ["json"]
    if not isinstance(formats, list) or not all(isinstance(fmt, str) for fmt in formats):
        raise FieldError("formats", f"expected a list of {', '.join(exporters.FORMATS)}")
    unknown = [fmt for fmt in formats if fmt not in exporters.FORMATS]
    if unknown:
        raise FieldError("formats", f"unknown format {unknown[0][:16]!r}; expected {', '.join(exporters.FORMATS)}")
    return ["json", *sorted(set(formats) - {"json"})]


def parameters_of(request: ReportRequest, formats: list[str], timezone: str) -> dict[str, Any]:
    return {
        "device_ids": list(request.device_ids),
        "start": iso(request.start),
        "end": iso(request.end),
        "daily": request.daily,
        "event_types": list(request.event_types),
        "formats": formats,
        "timezone": timezone,
    }


def _request_of(report: Report) -> ReportRequest:
    parameters = report.parameters
    return ReportRequest(
        kind=report.kind,
        device_ids=tuple(parameters["device_ids"]),
        start=datetime.fromisoformat(parameters["start"]),
        end=datetime.fromisoformat(parameters["end"]),
        daily=bool(parameters.get("daily")),
        event_types=tuple(parameters.get("event_types") or ()),
    )


def _job_arguments(request: ReportRequest, report_id: int, formats: list[str]) -> tuple[JobRef, dict[str, Any]]:
    common = {"start": iso(request.start), "end": iso(request.end), "report_id": report_id, "formats": formats}
    if request.kind == "fleet":
        return GENERATE_FLEET_REPORT, {**common, "device_ids": list(request.device_ids)}
    return GENERATE_DEVICE_REPORT, {
        **common,
        "device_id": request.device_ids[0],
        "kind": request.kind,
        "daily": request.daily,
        "event_types": list(request.event_types),
    }


async def visible_devices_among(
    session: AsyncSession, principal: Principal, device_ids: Sequence[int] | None
) -> list[int]:
    """`device_ids` when the caller may see each (else UnknownDevice for the first), or all they may see."""
    visible = {int(found) for found in (await session.execute(visible_device_ids(principal))).scalars() if found}
    if device_ids is None:
        return sorted(visible)
    for device_id in device_ids:
        if device_id not in visible:
            raise UnknownDevice(f"device {device_id} not found")
    return list(dict.fromkeys(device_ids))


async def create_report(
    sessions: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    settings: Settings,
    principal: Principal,
    request: ReportRequest,
    formats: list[str],
) -> tuple[int, str]:
    """Record the request, then (after commit) enqueue its job; return (report id, task id)."""
    check_range(request.start, request.end, settings.report_max_days, start_field="start", end_field="end")
    task_id = uuid.uuid4().hex
    report_id = 0
    try:
        async with transaction(sessions) as session:
            report_id = await _record_request(session, redis, settings, principal, request, formats, task_id)
    except AfterCommitFailed as failed:  # the report is recorded; its job could not be enqueued
        cause = failed.__cause__ or failed
        await _mark_failed(sessions, report_id, cause)
        raise Unavailable(f"report {report_id} could not be queued ({cause}); it is marked failed") from failed
    return report_id, task_id


async def _record_request(
    session: AsyncSession,
    redis: ArqRedis,
    settings: Settings,
    principal: Principal,
    request: ReportRequest,
    formats: list[str],
    task_id: str,
) -> int:
    """The report row, and its job enqueued once the row is committed."""
    ids = await visible_devices_among(session, principal, request.device_ids or None)
    request = ReportRequest(request.kind, tuple(ids), request.start, request.end, request.daily, request.event_types)
    report = Report(
        kind=request.kind,
        user_id=principal.user_id,
        parameters=parameters_of(request, formats, settings.timezone),
        formats=[],
        task_id=task_id,
    )
    session.add(report)
    await session.flush()
    assert report.id is not None
    ref, arguments = _job_arguments(request, report.id, formats)
    enqueue_after_commit(session, redis, ref, job_id=task_id, user_id=principal.user_id, **arguments)
    return report.id


async def report_for_task(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    task_id: str,
    request: ReportRequest,
    formats: list[str],
) -> int:
    """The report of a job run by hand (no report id given): made on its first try, found again on a retry."""
    async with transaction(sessions) as session:
        found = (await session.execute(select(Report.id).where(col(Report.task_id) == task_id))).scalar_one_or_none()
        if found is not None:
            return int(found)
        report = Report(
            kind=request.kind, parameters=parameters_of(request, formats, settings.timezone), task_id=task_id
        )
        session.add(report)
        await session.flush()
        assert report.id is not None
        return report.id


async def all_device_ids(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with sessions() as session:
        return [device_id for device_id in (await session.execute(select(col(Device.id)))).scalars() if device_id]


async def run_report(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    report_id: int,
    task_id: str,
    progress: Progress,
) -> dict[str, Any]:
    """Build the report in its stored parameters into its files; on failure record why and re-raise."""
    async with transaction(sessions) as session:
        report = await session.get(Report, report_id)
        if report is None:
            raise LookupError(f"report {report_id} not found")
        report.status, report.task_id, report.error = "in_progress", task_id, None
        report.started_at, report.finished_at, report.formats = utcnow(), None, []
        await files.delete_files(session, report_id)
    try:
        counts, totals, formats = await _generate(sessions, settings, report, progress)
    except BaseException as error:
        await asyncio.shield(_mark_failed(sessions, report_id, error))
        raise
    async with transaction(sessions) as session:
        stored = await session.get(Report, report_id)
        assert stored is not None
        stored.status, stored.finished_at = "complete", utcnow()
        stored.row_counts, stored.summary, stored.formats = counts, totals, formats
    return {"report_id": report_id, "row_counts": counts, "formats": formats}


async def _generate(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, report: Report, progress: Progress
) -> tuple[dict[str, int], dict[str, Any], list[str]]:
    assert report.id is not None
    request = _request_of(report)
    timezone = report.parameters.get("timezone", settings.timezone)
    built = await build_report(sessions, request, trip_defaults(settings), timezone, progress)
    with tempfile.TemporaryDirectory(prefix="tracker-report-") as folder:
        document = Path(folder) / "report.json"
        with document.open("wb") as out:
            counts = await write_document(out, report.id, request, timezone, built.sections)
        await files.store_file(sessions, report.id, "json", exporters.JSON_TYPE, document)
        formats = check_formats(report.parameters.get("formats"))
        for fmt in formats[1:]:
            target = Path(folder) / f"report.{fmt}"
            content_type = await asyncio.to_thread(exporters.convert, document, target, fmt, timezone)
            await files.store_file(sessions, report.id, fmt, content_type, target)
    return counts, built.totals, formats


async def write_document(
    out: IO[bytes], report_id: int | None, request: ReportRequest, timezone: str, sections: Sequence[Section]
) -> dict[str, int]:
    header = {
        "id": report_id,
        "kind": request.kind,
        "deviceIds": list(request.device_ids),
        "from": iso(request.start),
        "to": iso(request.end),
        "timezone": timezone,
        "generatedAt": iso(utcnow()),
    }
    return await exporters.write_json(out, header, sections)


async def _mark_failed(sessions: async_sessionmaker[AsyncSession], report_id: int, error: BaseException) -> None:
    """Record why a report failed; the task API can retry its job, which starts it afresh."""
    reason = (
        "cancelled or timed out" if isinstance(error, asyncio.CancelledError) else f"{type(error).__name__}: {error}"
    )
    try:
        async with transaction(sessions) as session:
            report = await session.get(Report, report_id)
            if report is not None:
                report.status, report.error, report.finished_at = "failed", reason[:2000], utcnow()
    except Exception as failure:  # the database may be what failed; the job's own error is what matters
        log.warning("report %d: could not record its failure: %s", report_id, failure)


async def export_report(sessions: async_sessionmaker[AsyncSession], report_id: int, fmt: str) -> dict[str, Any]:
    """Make a complete report's CSV or XLSX file from its stored JSON document."""
    if fmt not in exporters.FORMATS:
        raise FieldError("format", f"expected one of {', '.join(exporters.FORMATS)}, got {fmt[:16]!r}")
    async with sessions() as session:
        report = await session.get(Report, report_id)
    if report is None:
        raise LookupError(f"report {report_id} not found")
    if report.status != "complete":
        raise ReportNotReady(report_id, report.status)
    if fmt not in report.formats:
        with tempfile.TemporaryDirectory(prefix="tracker-export-") as folder:
            document, target = Path(folder) / "report.json", Path(folder) / f"report.{fmt}"
            await files.save_to(sessions, report_id, "json", document)
            timezone = report.parameters.get("timezone", "UTC")
            content_type = await asyncio.to_thread(exporters.convert, document, target, fmt, timezone)
            await files.store_file(sessions, report_id, fmt, content_type, target)
        async with transaction(sessions) as session:
            # Locked, so two exports finishing together both stay listed.
            stored = await session.get(Report, report_id, with_for_update=True)
            assert stored is not None
            stored.formats = sorted({*stored.formats, fmt}, key=exporters.FORMATS.index)
    return {"report_id": report_id, "format": fmt}


def _visible_reports(principal: Principal) -> Any:
    query = select(Report)
    return query if principal.is_admin else query.where(col(Report.user_id) == principal.user_id)


async def list_reports(session: AsyncSession, principal: Principal, limit: int, offset: int) -> list[Report]:
    query = _visible_reports(principal).order_by(col(Report.id).desc()).limit(limit).offset(offset)
    return list((await session.execute(query)).scalars())


async def get_report(session: AsyncSession, principal: Principal, report_id: int) -> Report | None:
    found: Report | None = (
        await session.execute(_visible_reports(principal).where(col(Report.id) == report_id))
    ).scalar_one_or_none()
    return found


async def report_to_api(redis: ArqRedis, report: Report) -> dict[str, Any]:
    """A report's record in the API's field names, with its job's progress while it runs."""
    progress = await read_progress(redis, report.task_id) if report.task_id and report.status in ACTIVE else None
    return {
        "id": report.id,
        "kind": report.kind,
        "userId": report.user_id,
        "status": report.status,
        "parameters": report.parameters,
        "formats": report.formats,
        "rowCounts": report.row_counts,
        "summary": report.summary,
        "error": report.error,
        "taskId": report.task_id,
        "progress": progress,
        "createdAt": iso(report.created_at),
        "startedAt": iso(report.started_at),
        "finishedAt": iso(report.finished_at),
    }


async def open_download(
    sessions: async_sessionmaker[AsyncSession], redis: ArqRedis, principal: Principal, report_id: int, fmt: str
) -> Download | ExportQueued | None:
    """The stored file; or, for a format not made yet, its export job (queued once per report run)."""
    async with sessions() as session:
        report = await get_report(session, principal, report_id)
        if report is None:
            return None
        if report.status != "complete":
            raise ReportNotReady(report_id, report.status)
        stored = await files.stored_file(session, report_id, fmt) if fmt in report.formats else None
    if stored is None:
        finished = report.finished_at.timestamp() if report.finished_at else 0
        task_id = f"export:{report_id}:{fmt}:{finished:.0f}"
        await enqueue(
            redis, EXPORT_REPORT_DATA, job_id=task_id, user_id=principal.user_id, report_id=report_id, format=fmt
        )
        return ExportQueued(task_id)
    name = exporters.file_name(report_id, report.kind, stored.content_type)
    return Download(stored.content_type, stored.size, name, files.read_parts(sessions, report_id, fmt))


@asynccontextmanager
async def direct_report(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    principal: Principal,
    request: ReportRequest,
    fmt: str,
) -> AsyncIterator[ReportFileOnDisk]:
    """A short report answered at once (Traccar's /api/reports/{kind}), as a temporary file."""
    check_range(request.start, request.end, settings.report_direct_max_days, start_field="from", end_field="to")
    async with sessions() as session:
        await visible_devices_among(session, principal, request.device_ids)
    built = await build_report(sessions, request, trip_defaults(settings), settings.timezone)
    with tempfile.TemporaryDirectory(prefix="tracker-direct-") as folder:
        document = Path(folder) / "report.json"
        with document.open("wb") as out:
            if fmt == "json":
                await exporters.write_json_array(out, built.sections[0])
            else:
                await write_document(out, None, request, settings.timezone, built.sections)
        if fmt == "json":
            yield ReportFileOnDisk(
                document, exporters.JSON_TYPE, exporters.file_name(None, request.kind, exporters.JSON_TYPE)
            )
            return
        target = Path(folder) / f"report.{fmt}"
        content_type = await asyncio.to_thread(exporters.convert, document, target, fmt, settings.timezone)
        yield ReportFileOnDisk(target, content_type, exporters.file_name(None, request.kind, content_type))
