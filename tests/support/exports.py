"""Report exports read back and compared with the JSON report: CSV (one file or a zip of sections) and XLSX."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from openpyxl import load_workbook

from tracker_jobs.reports.sections import SECTION_COLUMNS


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the JSON export writes it."""
    return orjson.loads(orjson.dumps(row))


def csv_sections(content: bytes, sections: list[str]) -> dict[str, list[dict[str, str]]]:
    """A CSV export read back: one file, or a zip of one per section."""
    if len(sections) == 1:
        return {sections[0]: list(csv.DictReader(io.StringIO(content.decode())))}
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.namelist() == [f"{name}.csv" for name in sections]
        return {name: list(csv.DictReader(io.StringIO(archive.read(f"{name}.csv").decode()))) for name in sections}


def csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def assert_csv_matches(content: bytes, document: dict[str, Any]) -> None:
    sections = document["report"]["sections"]
    for name, rows in csv_sections(content, sections).items():
        names = [column.name for column in SECTION_COLUMNS[name]]
        assert rows == [{key: csv_text(row.get(key)) for key in names} for row in document[name]]


def assert_xlsx_matches(content: bytes, document: dict[str, Any], timezone: str = "UTC") -> None:
    workbook = load_workbook(io.BytesIO(content), read_only=True)
    assert workbook.sheetnames == document["report"]["sections"]
    for name in workbook.sheetnames:
        columns = SECTION_COLUMNS[name]
        header, *rows = list(workbook[name].iter_rows(values_only=True, max_col=len(columns)))
        # Excel times carry no zone: a time column's header names the zone its local times are in.
        assert list(header) == [f"{c.name} ({timezone})" if c.type == "time" else c.name for c in columns]
        expected = [
            [_xlsx_expected(column.type, row.get(column.name), timezone) for column in columns]
            for row in document[name]
        ]
        # openpyxl writes 16 significant digits of a float.
        assert [list(row) for row in rows] == [
            [pytest.approx(value, rel=1e-15) if isinstance(value, float) else value for value in row]
            for row in expected
        ]
    workbook.close()


def _xlsx_expected(kind: str, value: Any, timezone: str) -> Any:
    if value is None:
        return None
    if kind == "time":
        return datetime.fromisoformat(value).astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    if kind == "json":
        return orjson.dumps(value).decode()
    return value
