"""The position record's conversions: the stream entry both ways, a database row, the API shape."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from tracker_jobs.positions.record import API_NAMES, PositionRecord, from_entry, to_entry_item

T0 = 1_767_225_600.25  # 2026-01-01T00:00:00.25Z


def a_record() -> PositionRecord:
    return PositionRecord(
        device_id=7,
        protocol="api",
        fix_time=T0,
        server_time=T0 + 1,
        latitude=52.5,
        longitude=13.4,
        altitude=35.0,
        speed=12.5,
        course=270.0,
        accuracy=4.0,
        valid=False,
        attributes={"batteryLevel": 80, "charge": True},
    )


def test_a_stream_entry_gives_back_the_records_written_into_it() -> None:
    first, second = a_record(), PositionRecord(device_id=8, fix_time=T0, latitude=1.0, longitude=2.0)
    entry = b"[" + b",".join([to_entry_item(first), to_entry_item(second)]) + b"]"
    assert from_entry(entry) == [first, second]


def test_an_entry_written_before_records_carried_an_id_still_reads() -> None:
    item = orjson.loads(to_entry_item(a_record()))
    del item["id"]
    assert from_entry(orjson.dumps([item])) == [a_record()]


def test_the_api_shape_names_every_field_as_traccar_does() -> None:
    record = a_record()
    record.id = 41
    api = record.to_api()
    assert list(api) == list(API_NAMES.values())
    assert api["fixTime"] == "2026-01-01T00:00:00.250000+00:00"
    assert api["serverTime"] == "2026-01-01T00:00:01.250000+00:00"
    assert {name: api[API_NAMES[name]] for name in ("id", "device_id", "speed", "valid")} == {
        "id": 41,
        "device_id": 7,
        "speed": 12.5,
        "valid": False,
    }


def test_a_database_row_reads_into_the_same_api_shape() -> None:
    record = a_record()
    record.id = 41
    row = {
        "id": 41,
        **{name: getattr(record, name) for name in API_NAMES if name != "id"},
        "fix_time": datetime.fromtimestamp(T0, UTC),
        "server_time": datetime.fromtimestamp(T0 + 1, UTC),
    }
    assert PositionRecord.from_row(row).to_api() == record.to_api()


def test_an_entry_with_a_field_this_version_does_not_know_still_reads() -> None:
    item = orjson.loads(to_entry_item(a_record()))
    assert from_entry(orjson.dumps([{**item, "heading2": 3}])) == [a_record()]
