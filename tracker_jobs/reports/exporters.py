"""Report files: JSON (orjson), CSV (one file, or a zip of one per section) and XLSX (openpyxl write-only).

All three stream. The JSON document is written with one row per line, so it is both plain JSON and the
source the CSV and XLSX files are made from, a line at a time:

    {"report": {...header...}
    ,"trips":[
    {...row...}
    ,{...row...}
    ]
    }
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import orjson
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from tracker_jobs.reports.sections import SECTION_COLUMNS, Column, Section

FORMATS = ("json", "csv", "xlsx")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv; charset=utf-8"
ZIP_TYPE = "application/zip"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
EXTENSIONS = {JSON_TYPE: "json", CSV_TYPE: "csv", ZIP_TYPE: "zip", XLSX_TYPE: "xlsx"}
XLSX_MAX_ROWS = 1_048_576  # Excel's limit per sheet; longer sections continue on another sheet
_XLSX_WIDTHS = {"time": 20, "float": 13, "int": 12, "bool": 8, "json": 40}
_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill("solid", fgColor="305496")

Record = tuple[str, dict[str, Any] | None]  # (section, row); row None where a section begins


async def write_json(out: IO[bytes], header: dict[str, Any], sections: Sequence[Section]) -> dict[str, int]:
    """Write the document; return each section's row count."""
    counts: dict[str, int] = {}
    out.write(b'{"report":' + orjson.dumps({**header, "sections": [s.name for s in sections]}) + b"\n")
    for section in sections:
        out.write(b',"' + section.name.encode() + b'":[\n')
        count = 0
        async for rows in section.chunks:
            if not rows:
                continue
            lines = b"\n,".join(orjson.dumps(row) for row in rows)
            out.write((b"," if count else b"") + lines + b"\n")
            count += len(rows)
        out.write(b"]\n")
        counts[section.name] = count
    out.write(b"}\n")
    return counts


async def write_json_array(out: IO[bytes], section: Section) -> None:
    """One section as a bare JSON array, as Traccar answers /api/reports/{kind}."""
    out.write(b"[")
    first = True
    async for rows in section.chunks:
        for row in rows:
            out.write((b"" if first else b",") + orjson.dumps(row))
            first = False
    out.write(b"]")


def read_json(lines: Iterable[bytes]) -> tuple[dict[str, Any], Iterator[Record]]:
    """The header and the records of a document made by write_json."""
    iterator = iter(lines)
    first = next(iterator, b"")
    if not first.startswith(b'{"report":'):
        raise ValueError("not a report document")
    header: dict[str, Any] = orjson.loads(first[len(b'{"report":') :])
    return header, _records(iterator)


def _records(lines: Iterator[bytes]) -> Iterator[Record]:
    section = ""
    for raw in lines:
        line = raw.strip()
        if line.startswith(b',"') and line.endswith(b'":['):
            section = line[2:-3].decode()
            yield section, None
        elif line.startswith((b"{", b",{")):
            yield section, orjson.loads(line.removeprefix(b","))


def convert(source: Path, target: Path, fmt: str, timezone: str) -> str:
    """Make the CSV or XLSX file of a JSON document; return its content type."""
    with source.open("rb") as lines:
        header, records = read_json(lines)
        if fmt == "csv":
            return write_csv(header["sections"], records, target)
        if fmt == "xlsx":
            write_xlsx(records, target, ZoneInfo(timezone))
            return XLSX_TYPE
    raise ValueError(f"format: expected csv or xlsx, got {fmt!r}")


def _csv_bool(value: Any) -> Any:
    return value if value is None else ("true" if value else "false")


def _csv_json(value: Any) -> Any:
    return value if value is None else orjson.dumps(value).decode()


# The csv module writes the other values as they are (None as an empty field).
_CSV_CONVERTERS: dict[str, Callable[[Any], Any]] = {"bool": _csv_bool, "json": _csv_json}


def write_csv(sections: Sequence[str], records: Iterator[Record], target: Path) -> str:
    """A CSV file for one section, a zip of one CSV per section for several; return the content type."""
    with target.open("wb") as out:
        if len(sections) == 1:
            text = io.TextIOWrapper(out, encoding="utf-8", newline="")
            _write_csv_rows(records, lambda _name: text)
            text.flush()
            text.detach()
            return CSV_TYPE
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive, ExitStack() as member:

            def next_member(name: str) -> IO[str]:
                member.close()  # the previous section's file is complete
                entry = archive.open(f"{name}.csv", "w", force_zip64=True)
                return member.enter_context(io.TextIOWrapper(entry, encoding="utf-8", newline=""))

            _write_csv_rows(records, next_member)
        return ZIP_TYPE


def _write_csv_rows(records: Iterator[Record], open_section: Callable[[str], IO[str]]) -> None:
    writer: Any = None
    names: list[str] = []
    converters: list[tuple[int, Callable[[Any], Any]]] = []
    for section, row in records:
        if row is None:
            columns = SECTION_COLUMNS[section]
            names = [column.name for column in columns]
            converters = [(i, _CSV_CONVERTERS[c.type]) for i, c in enumerate(columns) if c.type in _CSV_CONVERTERS]
            writer = csv.writer(open_section(section))
            writer.writerow(names)
        else:
            values = [row.get(name) for name in names]
            for index, convert in converters:
                values[index] = convert(values[index])
            writer.writerow(values)


def write_xlsx(records: Iterator[Record], target: Path, timezone: ZoneInfo) -> None:
    """One sheet per section: a styled header, column widths by type, numbers and local Excel times."""
    workbook = Workbook(write_only=True)
    sheet: Any = None
    columns: tuple[Column, ...] = ()
    section, rows_in_sheet, sheets_of_section = "", 0, 0
    for name, row in records:
        if row is None or rows_in_sheet >= XLSX_MAX_ROWS:
            if row is None:
                section, columns, sheets_of_section = name, SECTION_COLUMNS[name], 0
            sheets_of_section += 1
            title = section if sheets_of_section == 1 else f"{section} ({sheets_of_section})"
            sheet = _new_sheet(workbook, title, columns, timezone)
            rows_in_sheet = 1
            if row is None:
                continue
        sheet.append([_xlsx_value(column, row.get(column.name), timezone) for column in columns])
        rows_in_sheet += 1
    workbook.save(target)


def xlsx_header(column: Column, timezone: ZoneInfo) -> str:
    """A column's name; a time column's names the zone its local times are in (Excel times have none)."""
    return f"{column.name} ({timezone.key})" if column.type == "time" else column.name


def _new_sheet(workbook: Workbook, title: str, columns: Sequence[Column], timezone: ZoneInfo) -> Any:
    sheet = workbook.create_sheet(title=title)
    headers = [xlsx_header(column, timezone) for column in columns]
    for index, (column, header) in enumerate(zip(columns, headers, strict=True), start=1):
        width = _XLSX_WIDTHS.get(column.type, max(14, len(header) + 2))
        sheet.column_dimensions[get_column_letter(index)].width = max(width, len(header) + 2)
    sheet.freeze_panes = "A2"
    cells = []
    for header in headers:
        cell = WriteOnlyCell(sheet, value=header)
        cell.font, cell.fill, cell.alignment = _HEADER_FONT, _HEADER_FILL, Alignment(horizontal="center")
        cells.append(cell)
    sheet.append(cells)
    return sheet


def _xlsx_value(column: Column, value: Any, timezone: ZoneInfo) -> Any:
    if value is None:
        return None
    if column.type == "time":
        # Excel times have no zone: write the report's local time (the header names the zone).
        return datetime.fromisoformat(value).astimezone(timezone).replace(tzinfo=None)
    if column.type == "json":
        return orjson.dumps(value).decode()
    return value


def file_name(report_id: int | None, kind: str, content_type: str) -> str:
    stem = kind if report_id is None else f"report-{report_id}-{kind}"
    return f"{stem}.{EXTENSIONS[content_type]}"
