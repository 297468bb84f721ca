"""The XLSX export writes times in the report's time zone and names the zone in the header row."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import load_workbook

from tests.support.exports import assert_xlsx_matches
from tracker_jobs.reports.exporters import write_xlsx


def test_xlsx_times_are_local_to_the_report_and_the_header_names_the_zone(tmp_path: Path) -> None:
    stop: dict[str, Any] = {
        "deviceId": 1,
        "deviceName": "bus",
        "startTime": "2026-07-01T22:30:00+00:00",  # 00:30 the next day in Berlin (summer time)
        "endTime": "2026-07-01T23:00:00+00:00",
        "duration": 1_800_000,
        "latitude": 52.5,
        "longitude": 13.4,
        "positionId": 7,
        "engineHours": None,
    }
    target = tmp_path / "stops.xlsx"
    write_xlsx(iter([("stops", None), ("stops", stop)]), target, ZoneInfo("Europe/Berlin"))
    assert_xlsx_matches(target.read_bytes(), {"report": {"sections": ["stops"]}, "stops": [stop]}, "Europe/Berlin")
    sheet = load_workbook(target, read_only=True)["stops"]
    header, row = sheet.iter_rows(values_only=True, max_row=2)
    assert header[2] == "startTime (Europe/Berlin)"
    assert str(row[2]) == "2026-07-02 00:30:00"
