"""Direct report answers (Traccar's /api/reports/{kind}), bad input named in 4xx answers, and who sees what."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.support.client import error_of
from tests.support.exports import as_json, assert_csv_matches, assert_xlsx_matches
from tests.support.fleet import DAY, NEXT_DAY, Fleet
from tests.support.traces import assert_rows

Client = TestClient[Any, Any]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def direct(fleet: Fleet, **extra: str) -> dict[str, str]:
    return {"deviceId": str(fleet.van), "from": DAY.isoformat(), "to": NEXT_DAY.isoformat(), **extra}


async def test_direct_answers_are_the_report_rows(admin_client: Client, fleet: Fleet) -> None:
    trips = await admin_client.get("/api/reports/trips", params=direct(fleet), headers=fleet.ann)
    assert trips.status == 200
    assert trips.headers["Content-Type"] == "application/json"
    assert_rows(await trips.json(), [as_json(fleet.expected_trip())])
    stops = await (await admin_client.get("/api/reports/stops", params=direct(fleet), headers=fleet.ann)).json()
    assert_rows(stops, [as_json(stop) for stop in fleet.expected_stops()])
    daily = await admin_client.get("/api/reports/summary", params=direct(fleet, daily="true"), headers=fleet.ann)
    [day] = await daily.json()
    assert day["distance"] == pytest.approx(fleet.distance(fleet.van))
    assert day["drivingDistance"] == pytest.approx(fleet.expected_trip()["distance"])
    assert (day["startOdometer"], day["endOdometer"]) == (10_000.0, 10_610.0)
    events = await admin_client.get(
        "/api/reports/events", params=direct(fleet, type="deviceOverspeed"), headers=fleet.ann
    )
    assert [(event["type"], event["deviceId"]) for event in await events.json()] == [("deviceOverspeed", fleet.van)]
    route = await (await admin_client.get("/api/reports/route", params=direct(fleet), headers=fleet.ann)).json()
    assert len(route) == len(fleet.traces[fleet.van].fixes)

    both = {**direct(fleet), "deviceId": [str(fleet.van), str(fleet.truck)]}
    summary = await (await admin_client.get("/api/reports/summary", params=both, headers=fleet.ann)).json()
    assert [row["deviceName"] for row in summary] == ["van", "truck"]
    document = {"report": {"sections": ["summary"]}, "summary": summary}
    workbook = await admin_client.get("/api/reports/summary", params=both, headers={**fleet.ann, "Accept": XLSX})
    assert workbook.headers["Content-Type"] == XLSX
    assert workbook.headers["Content-Disposition"] == 'attachment; filename="summary.xlsx"'
    assert_xlsx_matches(await workbook.read(), document)
    table = await admin_client.get("/api/reports/summary", params=both, headers={**fleet.ann, "Accept": "text/csv"})
    assert table.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert_csv_matches(await table.read(), document)


async def test_direct_answer_over_the_range_limit_points_to_the_jobs(admin_client: Client, fleet: Fleet) -> None:
    long = direct(fleet, to=(DAY + timedelta(days=8)).isoformat())
    response = await admin_client.get("/api/reports/trips", params=long, headers=fleet.ann)
    assert response.status == 413
    error = await error_of(response)
    assert error["code"] == "too_large"
    assert "spans 8 days; at most 7" in error["message"]
    assert "/api/tasks/report/device" in error["message"]


async def test_bad_report_requests_name_the_problem(admin_client: Client, fleet: Fleet) -> None:
    period = {"start": DAY.isoformat(), "end": NEXT_DAY.isoformat()}
    van = {**period, "device_id": fleet.van}
    posts: list[tuple[str, dict[str, Any], int, str]] = [
        ("device", {**van, "start": NEXT_DAY.isoformat(), "end": DAY.isoformat()}, 400, "start: must be before end"),
        ("device", period, 400, "device_id: is required"),
        ("device", {**period, "device_id": 9999}, 404, "device 9999 not found"),
        ("device", {**period, "device_id": fleet.bus}, 404, f"device {fleet.bus} not found"),
        ("device", {**van, "kind": "weekly"}, 400, "kind: expected one of summary, detailed"),
        ("device", {**van, "kind": "fleet"}, 400, "kind: expected one of"),
        ("device", {**van, "formats": ["pdf"]}, 400, "formats.0: expected one of json, csv, xlsx, got 'pdf'"),
        ("device", {**van, "colour": "red"}, 400, "colour: is not a report field"),
        ("device", {**van, "start": "yesterday"}, 400, "start: "),
        ("device", {**van, "daily": "yes"}, 400, "daily: must be true or false"),
        ("device", {**van, "device_id": "van"}, 400, "device_id: must be a whole number"),
        ("device", {**van, "end": (DAY + timedelta(days=400)).isoformat()}, 400, "end: the range spans 400 days"),
        ("fleet", {**period, "device_ids": "all"}, 400, "device_ids: must be a list"),
        ("fleet", {**period, "device_ids": []}, 400, "device_ids: must not be empty"),
        ("fleet", {**period, "device_ids": [fleet.van, fleet.bus]}, 404, f"device {fleet.bus} not found"),
    ]
    for kind, body, status, message in posts:
        response = await admin_client.post(f"/api/tasks/report/{kind}", json=body, headers=fleet.ann)
        assert response.status == status, (body, await response.text())
        assert message in (await error_of(response))["message"], body
    gets: list[tuple[str, dict[str, Any], int, str]] = [
        ("/api/reports/weekly", direct(fleet), 404, "report kind 'weekly'"),
        ("/api/reports/trips", {"from": DAY.isoformat(), "to": NEXT_DAY.isoformat()}, 400, "deviceId: is required"),
        ("/api/reports/trips", {"deviceId": str(fleet.van), "from": DAY.isoformat()}, 400, "to: is required"),
        (
            "/api/reports/trips",
            direct(fleet, **{"from": NEXT_DAY.isoformat(), "to": DAY.isoformat()}),
            400,
            "from: must be before to",
        ),
        ("/api/reports/trips", direct(fleet, deviceId=str(fleet.bus)), 404, f"device {fleet.bus} not found"),
        ("/api/reports/summary", direct(fleet, daily="maybe"), 400, "daily: must be true or false"),
        ("/api/reports/1/download", {"format": "pdf"}, 400, "format: expected one of json, csv, xlsx"),
        ("/api/reports/77", {}, 404, "report 77 not found"),
    ]
    for path, params, status, message in gets:
        response = await admin_client.get(path, params=params, headers=fleet.ann)
        assert response.status == status, (path, params, await response.text())
        assert message in (await error_of(response))["message"], (path, params)


async def test_users_see_only_their_own_reports(
    admin_client: Client, admin_headers: dict[str, str], fleet: Fleet
) -> None:
    period = {"start": DAY.isoformat(), "end": NEXT_DAY.isoformat()}
    asked = await admin_client.post(
        "/api/tasks/report/device", json={**period, "device_id": fleet.van}, headers=fleet.ann
    )
    report_id = (await asked.json())["report_id"]
    listed = await (await admin_client.get("/api/reports", headers=fleet.ann)).json()
    assert [(item["id"], item["status"], item["kind"]) for item in listed] == [(report_id, "queued", "summary")]
    assert await (await admin_client.get("/api/reports", headers=fleet.bob)).json() == []
    for path in (f"/api/reports/{report_id}", f"/api/reports/{report_id}/download"):
        hidden = await admin_client.get(path, headers=fleet.bob)
        assert hidden.status == 404
        assert (await error_of(hidden))["message"] == f"report {report_id} not found"
    everyone = await (await admin_client.get("/api/reports", headers=admin_headers)).json()
    assert [item["userId"] for item in everyone] == [listed[0]["userId"]]
    not_ready = await admin_client.get(f"/api/reports/{report_id}/download", headers=fleet.ann)
    assert not_ready.status == 409
    assert "is queued" in (await error_of(not_ready))["message"]
    paged = await admin_client.get("/api/reports", params={"limit": "0"}, headers=fleet.ann)
    assert paged.status == 400
    assert orjson.loads(await paged.read())["error"]["message"] == "limit: must be from 1 to 1000"
