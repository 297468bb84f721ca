"""Report jobs through the API and the real worker: stored in every format, read back and compared."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.exports import as_json, assert_csv_matches, assert_xlsx_matches
from tests.support.fleet import DAY, NEXT_DAY, Fleet, store_trace
from tests.support.traces import Trace, assert_rows
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings
from tracker_jobs.core.db import transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.jobs.base import enqueue
from tracker_jobs.jobs.progress import read_progress
from tracker_jobs.jobs.refs import JOBS, REPORTS
from tracker_jobs.reports import files
from tracker_jobs.reports.models import Report

Client = TestClient[Any, Any]
PERIOD = {"start": DAY.isoformat(), "end": NEXT_DAY.isoformat()}


async def ask(client: Client, path: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    assert response.status == 202, await response.text()
    queued: dict[str, Any] = await response.json()
    assert set(queued) == {"task_id", "report_id"}
    return queued


async def report(client: Client, report_id: int, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"/api/reports/{report_id}", headers=headers)
    assert response.status == 200, await response.text()
    found: dict[str, Any] = await response.json()
    return found


async def download(client: Client, report_id: int, fmt: str, headers: dict[str, str]) -> tuple[bytes, Any]:
    response = await client.get(f"/api/reports/{report_id}/download", params={"format": fmt}, headers=headers)
    assert response.status == 200, await response.text()
    return await response.read(), response.headers


async def test_detailed_report_is_stored_in_every_format(
    settings: Settings, redis: ArqRedis, admin_client: Client, fleet: Fleet
) -> None:
    queued = await ask(
        admin_client,
        "/api/tasks/report/device",
        fleet.ann,
        {**PERIOD, "device_id": fleet.van, "kind": "detailed", "formats": ["xlsx", "csv"]},
    )
    assert (await report(admin_client, queued["report_id"], fleet.ann))["status"] == "queued"
    assert await run_burst(settings, REPORTS) == 1

    found = await report(admin_client, queued["report_id"], fleet.ann)
    assert found["status"] == "complete", found["error"]
    assert found["taskId"] == queued["task_id"]
    assert found["formats"] == ["json", "csv", "xlsx"]
    assert found["rowCounts"] == {"summary": 1, "trips": 1, "stops": 2, "events": 2}
    assert found["summary"]["trips"] == 1
    assert found["summary"]["distance"] == pytest.approx(fleet.distance(fleet.van))
    assert found["summary"]["drivingDistance"] == pytest.approx(fleet.expected_trip()["distance"])
    assert await read_progress(redis, queued["task_id"]) == {
        "percent": 100.0,
        "message": "1/1 devices",
        "done": 1,
        "total": 1,
    }

    content, headers = await download(admin_client, queued["report_id"], "json", fleet.ann)
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Disposition"] == f'attachment; filename="report-{queued["report_id"]}-detailed.json"'
    document = orjson.loads(content)
    assert document["report"]["sections"] == ["summary", "trips", "stops", "events"]
    assert_rows(document["trips"], [as_json(fleet.expected_trip())])
    assert_rows(document["stops"], [as_json(stop) for stop in fleet.expected_stops()])
    assert [event["type"] for event in document["events"]] == ["geofenceEnter", "deviceOverspeed"]
    assert document["summary"][0]["drivingDistance"] == pytest.approx(document["trips"][0]["distance"])

    zipped, headers = await download(admin_client, queued["report_id"], "csv", fleet.ann)
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"].endswith('-detailed.zip"')
    assert_csv_matches(zipped, document)
    workbook, headers = await download(admin_client, queued["report_id"], "xlsx", fleet.ann)
    assert headers["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert_xlsx_matches(workbook, document)


async def test_fleet_report_covers_what_the_user_sees(settings: Settings, admin_client: Client, fleet: Fleet) -> None:
    queued = await ask(admin_client, "/api/tasks/report/fleet", fleet.ann, PERIOD)
    assert await run_burst(settings, REPORTS) == 1
    found = await report(admin_client, queued["report_id"], fleet.ann)
    assert found["status"] == "complete", found["error"]
    assert found["parameters"]["device_ids"] == [fleet.van, fleet.truck]
    trip = fleet.expected_trip()
    totals = {
        "devices": 2,
        "trips": 1,
        "stops": 3,
        "distance": fleet.distance(fleet.van) + fleet.distance(fleet.truck),
        "drivingDistance": trip["distance"],
        "duration": trip["duration"],
        "averageSpeed": trip["averageSpeed"],
        "maxSpeed": trip["maxSpeed"],
    }
    assert_rows([dict(sorted(found["summary"].items()))], [dict(sorted(totals.items()))])  # JSONB keeps no key order
    document = orjson.loads((await download(admin_client, queued["report_id"], "json", fleet.ann))[0])
    assert [row["deviceName"] for row in document["summary"]] == ["van", "truck"]
    assert [row["deviceName"] for row in document["stops"]] == ["van", "van", "truck"]
    assert_rows(document["totals"], [totals])


async def test_route_report_exported_on_demand(settings: Settings, admin_client: Client, fleet: Fleet) -> None:
    queued = await ask(
        admin_client, "/api/tasks/report/device", fleet.ann, {**PERIOD, "device_id": fleet.van, "kind": "route"}
    )
    assert await run_burst(settings, REPORTS) == 1
    document = orjson.loads((await download(admin_client, queued["report_id"], "json", fleet.ann))[0])
    trace = fleet.traces[fleet.van]
    assert [row["id"] for row in document["route"]] == [fix.position_id for fix in trace.fixes]
    assert document["route"][0]["fixTime"] == trace.fixes[0].fix_time.isoformat()

    path = f"/api/reports/{queued['report_id']}/download"
    pending = await admin_client.get(path, params={"format": "xlsx"}, headers=fleet.ann)
    assert pending.status == 202
    export = await pending.json()
    again = await admin_client.get(path, params={"format": "xlsx"}, headers=fleet.ann)
    assert (await again.json())["task_id"] == export["task_id"]  # asked twice, made once
    assert await run_burst(settings, REPORTS) == 1
    assert (await report(admin_client, queued["report_id"], fleet.ann))["formats"] == ["json", "xlsx"]
    workbook, headers = await download(admin_client, queued["report_id"], "xlsx", fleet.ann)
    assert headers["Content-Disposition"].endswith('-route.xlsx"')
    assert_xlsx_matches(workbook, document)


async def test_files_larger_than_a_part_are_stored_in_parts(
    sessions: async_sessionmaker[AsyncSession],
    admin_client: Client,
    fleet: Fleet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(files, "PART_BYTES", 1000)
    content = bytes(range(256)) * 10
    source = tmp_path / "file.bin"
    source.write_bytes(content)
    async with transaction(sessions) as session:
        stored_report = Report(kind="route", status="complete", formats=["json"])
        session.add(stored_report)
        await session.flush()
        assert stored_report.id is not None
        report_id = stored_report.id
    assert await files.store_file(sessions, report_id, "json", "application/json", source) == len(content)
    async with sessions() as session:
        assert await files.stored_file(session, report_id, "json") == files.StoredFile("application/json", 2560, 3)
    downloaded, headers = await download(admin_client, report_id, "json", {"Authorization": "Bearer test-admin-token"})
    assert downloaded == content
    assert headers["Content-Length"] == "2560"


async def test_failed_report_records_why_and_is_retried_from_the_task_api(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], admin_client: Client, fleet: Fleet
) -> None:
    async with transaction(sessions) as session:
        van = await session.get(Device, fleet.van)
        assert van is not None
        van.attributes = {"minDistance": "far"}
    queued = await ask(
        admin_client, "/api/tasks/report/device", fleet.ann, {**PERIOD, "device_id": fleet.van, "kind": "trips"}
    )
    await run_burst(settings, REPORTS)
    failed = await report(admin_client, queued["report_id"], fleet.ann)
    assert failed["status"] == "failed"
    assert (
        failed["error"] == f"ValueError: device {fleet.van}: attribute minDistance must be a positive number, got 'far'"
    )
    not_ready = await admin_client.get(f"/api/reports/{queued['report_id']}/download", headers=fleet.ann)
    assert not_ready.status == 409

    async with transaction(sessions) as session:
        van = await session.get(Device, fleet.van)
        assert van is not None
        van.attributes = {"minDistance": 200}
    retried = await admin_client.post(f"/api/tasks/task/{queued['task_id']}/retry", headers=fleet.ann)
    assert retried.status == 202, await retried.text()
    await run_burst(settings, REPORTS)
    done = await report(admin_client, queued["report_id"], fleet.ann)
    assert done["status"] == "complete"
    assert done["error"] is None
    assert done["taskId"] == (await retried.json())["task_id"]
    assert done["rowCounts"] == {"trips": 1}


async def test_daily_reports_cover_yesterday_for_every_user(
    settings: Settings, redis: ArqRedis, sessions: async_sessionmaker[AsyncSession], admin_client: Client, fleet: Fleet
) -> None:
    yesterday = datetime.now(UTC).replace(hour=7, minute=0, second=0, microsecond=0) - timedelta(days=1)
    trace = Trace(yesterday, first_id=5000)
    trace.park(10)
    trace.drive(10, step_m=500)
    trace.park(10)
    await store_trace(sessions, fleet.van, trace)

    await enqueue(redis, JOBS["generate_daily_reports"])
    assert await run_burst(settings, REPORTS) == 1
    mine = await (await admin_client.get("/api/reports", headers=fleet.ann)).json()
    assert [(item["kind"], item["status"]) for item in mine] == [("daily", "complete")]
    assert mine[0]["parameters"]["day"] == yesterday.date().isoformat()
    assert mine[0]["rowCounts"] == {"summary": 2, "trips": 1}
    assert mine[0]["summary"]["devices"] == 2
    bobs = await (await admin_client.get("/api/reports", headers=fleet.bob)).json()
    assert [(item["kind"], item["rowCounts"]) for item in bobs] == [("daily", {"summary": 1, "trips": 0})]

    await enqueue(redis, JOBS["generate_daily_reports"], job_id="daily-again")
    assert await run_burst(settings, REPORTS) == 1
    assert len(await (await admin_client.get("/api/reports", headers=fleet.ann)).json()) == 1
