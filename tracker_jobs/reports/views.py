"""Reports over HTTP: ask for one as a job, read and download it, or get a short one directly (Traccar's API).

A user sees their own reports and devices only; someone else's are 404 to them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from tracker_jobs.api.access import principal
from tracker_jobs.api.bodies import read_body
from tracker_jobs.api.keys import REDIS, SESSIONS, SETTINGS
from tracker_jobs.api.openapi import (
    ANY_OBJECT,
    BOOLEAN,
    ID,
    INTEGER,
    PAGE_QUERIES,
    STRING,
    TIME,
    Operation,
    Query,
    Reply,
    array,
    documented,
    error_reply,
    nullable,
    obj,
)
from tracker_jobs.api.params import page, path_id, query_bool, query_ids, query_time
from tracker_jobs.api.responses import json_response
from tracker_jobs.api.routes import Route
from tracker_jobs.core.errors import FieldError, HttpError, not_found
from tracker_jobs.reports import exporters, service
from tracker_jobs.reports.builders import DIRECT_KINDS, ReportRequest
from tracker_jobs.reports.schemas import NewDeviceReport, NewFleetReport

STREAM_CHUNK_BYTES = 1024 * 1024
# What an Accept header may ask a direct answer for; anything else gets JSON, as Traccar answers.
ACCEPTED_FORMATS = {exporters.XLSX_TYPE: "xlsx", "text/csv": "csv"}

FORMAT = {"type": "string", "enum": list(exporters.FORMATS)}
REPORT = obj(
    {
        "id": INTEGER,
        "kind": STRING,
        "userId": nullable(INTEGER),
        "status": {"type": "string", "enum": ["queued", "in_progress", "complete", "failed"]},
        "parameters": ANY_OBJECT,
        "formats": array(FORMAT),
        "rowCounts": ANY_OBJECT,
        "summary": ANY_OBJECT,
        "error": nullable(STRING),
        "taskId": nullable(STRING),
        "progress": nullable(ANY_OBJECT),
        "createdAt": TIME,
        "startedAt": nullable(TIME),
        "finishedAt": nullable(TIME),
    }
)
QUEUED = obj({"task_id": STRING, "report_id": INTEGER})
TOO_LARGE = error_reply("the range is longer than a report may cover; the message names the limit")
NO_DEVICE = error_reply("a device does not exist or is not one of the caller's; the message names it")


@contextmanager
def _report_errors(*, too_large_status: int = 400, end_field: str = "end") -> Iterator[None]:
    """The service's refusals as 4xx answers that name the problem."""
    try:
        yield
    except service.RangeTooLarge as error:
        if too_large_status == 413:
            raise HttpError(
                413,
                "too_large",
                f"from/to: {error}; POST /api/tasks/report/device or /api/tasks/report/fleet makes it as a job",
            ) from None
        raise FieldError(end_field, str(error)) from None


async def _accepted(request: web.Request, report_request: ReportRequest, formats: list[str]) -> web.Response:
    report_id, task_id = await service.create_report(
        request.app[SESSIONS], request.app[REDIS], request.app[SETTINGS], principal(request), report_request, formats
    )
    return json_response({"task_id": task_id, "report_id": report_id}, status=202)


@documented(
    Operation(
        "Make one device's report as a job (summary, detailed, route, trips, stops, events)",
        {202: Reply("queued: follow it at /api/reports/{report_id}", QUEUED), 404: NO_DEVICE},
        body=NewDeviceReport,
        example={"device_id": 1, "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "kind": "trips"},
        tag="reports",
    )
)
async def post_device_report(request: web.Request) -> web.Response:
    body = await read_body(request, NewDeviceReport)
    with _report_errors():
        report_request = ReportRequest(body.kind, (body.device_id,), body.start, body.end, body.daily, body.event_types)
        return await _accepted(request, report_request, service.check_formats(body.formats))


@documented(
    Operation(
        "Make a fleet report as a job: summary, trips and stops per device plus totals, for the given devices "
        "or every device the caller may see",
        {202: Reply("queued: follow it at /api/reports/{report_id}", QUEUED), 404: NO_DEVICE},
        body=NewFleetReport,
        example={"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        tag="reports",
    )
)
async def post_fleet_report(request: web.Request) -> web.Response:
    body = await read_body(request, NewFleetReport)
    with _report_errors():
        report_request = ReportRequest("fleet", body.device_ids or (), body.start, body.end)
        return await _accepted(request, report_request, service.check_formats(body.formats))


@documented(
    Operation(
        "The caller's reports, newest first (an admin sees everyone's)",
        {200: Reply("reports", array(REPORT))},
        query=(*PAGE_QUERIES,),
        tag="reports",
    )
)
async def list_reports(request: web.Request) -> web.Response:
    limit, offset = page(request)
    async with request.app[SESSIONS]() as session:
        reports = await service.list_reports(session, principal(request), limit, offset)
    return json_response([await service.report_to_api(request.app[REDIS], report) for report in reports])


@documented(
    Operation(
        "One report: its status, row counts, summary and its job's progress",
        {200: Reply("the report", REPORT)},
        path={"id": ID},
        tag="reports",
    )
)
async def get_report(request: web.Request) -> web.Response:
    report_id = path_id(request)
    async with request.app[SESSIONS]() as session:
        report = await service.get_report(session, principal(request), report_id)
    if report is None:
        raise not_found(f"report {report_id}")
    return json_response(await service.report_to_api(request.app[REDIS], report))


@documented(
    Operation(
        "A complete report's file; a format not made yet is queued (202) and listed in the report's formats when done",
        {
            200: Reply("the file (JSON, CSV or a zip of CSVs, XLSX)", headers=("Content-Disposition",)),
            202: Reply("the export is queued", obj({"task_id": STRING, "report_id": INTEGER, "format": FORMAT})),
            409: error_reply("the report is not complete"),
        },
        path={"id": ID},
        query=(Query("format", FORMAT, "json (default), csv or xlsx"),),
        tag="reports",
    )
)
async def download_report(request: web.Request) -> web.StreamResponse:
    report_id = path_id(request)
    fmt = request.query.get("format") or "json"
    if fmt not in exporters.FORMATS:
        raise FieldError("format", f"expected one of {', '.join(exporters.FORMATS)}, got {fmt[:16]!r}")
    with _report_errors():
        found = await service.open_download(
            request.app[SESSIONS], request.app[REDIS], principal(request), report_id, fmt
        )
    if found is None:
        raise not_found(f"report {report_id}")
    if isinstance(found, service.ExportQueued):
        return json_response({"task_id": found.task_id, "report_id": report_id, "format": fmt}, status=202)
    return await _send(request, found.content_type, found.size, found.file_name, found.chunks)


@documented(
    Operation(
        "A short report answered at once, as Traccar's /api/reports/{kind}: JSON rows, or XLSX/CSV when Accept asks",
        {200: Reply("the rows", array(ANY_OBJECT)), 413: TOO_LARGE},
        path={"kind": {"type": "string", "enum": list(DIRECT_KINDS)}},
        query=(
            Query("deviceId", ID, "the devices", required=True, repeated=True),
            Query("from", TIME, required=True),
            Query("to", TIME, required=True),
            Query("daily", BOOLEAN, "summary per local day"),
            Query("type", STRING, "event types (events only)", repeated=True),
        ),
        tag="reports",
    )
)
async def direct_report(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    if kind not in DIRECT_KINDS:
        raise not_found(f"report kind {kind[:40]!r} (expected one of {', '.join(DIRECT_KINDS)})")
    device_ids = tuple(query_ids(request, "deviceId"))
    if not device_ids:
        raise FieldError("deviceId", "is required")
    start, end = query_time(request, "from"), query_time(request, "to")
    if start is None or end is None:
        raise FieldError("from" if start is None else "to", "is required")
    report_request = ReportRequest(
        kind, device_ids, start, end, query_bool(request, "daily"), tuple(request.query.getall("type", []))
    )
    fmt = next(
        (fmt for accepted, fmt in ACCEPTED_FORMATS.items() if accepted in request.headers.get("Accept", "")), "json"
    )
    with _report_errors(too_large_status=413):
        async with service.direct_report(
            request.app[SESSIONS], request.app[SETTINGS], principal(request), report_request, fmt
        ) as answer:
            name = None if fmt == "json" else answer.file_name
            size = answer.path.stat().st_size
            return await _send(request, answer.content_type, size, name, _read_file(answer.path))


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(STREAM_CHUNK_BYTES):
            yield chunk


async def _send(
    request: web.Request, content_type: str, size: int, file_name: str | None, chunks: AsyncIterator[bytes]
) -> web.StreamResponse:
    headers = {"Content-Type": content_type, "Content-Length": str(size)}
    if file_name is not None:
        headers["Content-Disposition"] = f'attachment; filename="{file_name}"'
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


ROUTES = [
    Route("POST", "/api/tasks/report/device", post_device_report),
    Route("POST", "/api/tasks/report/fleet", post_fleet_report),
    Route("GET", "/api/reports", list_reports),
    Route("GET", r"/api/reports/{id:\d+}", get_report),
    Route("GET", r"/api/reports/{id:\d+}/download", download_report),
    Route("GET", "/api/reports/{kind}", direct_report),
]
