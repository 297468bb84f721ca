"""The OsmAnd decoder: every field the clients send, and a named error for every bad one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tracker_jobs.core.errors import FieldError
from tracker_jobs.positions.decode import decode_osmand, decode_traccar_client_json

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_full_query() -> None:
    unique_id, position = decode_osmand(
        {
            "id": "dev1",
            "lat": "52.5",
            "lon": "-13.25",
            "timestamp": "1767225600",
            "speed": "10",
            "bearing": "370",
            "altitude": "35.5",
            "accuracy": "4",
            "hdop": "0.9",
            "batt": "87",
            "charge": "true",
            "valid": "false",
            "driver": "ann",
            "ignition": "true",
            "rpm": "1500",
            "temp": "21.5",
        },
        now=NOW,
    )
    assert unique_id == "dev1"
    assert (position.latitude, position.longitude) == (52.5, -13.25)
    assert position.fix_time == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert position.speed == 10.0
    assert position.course == 10.0
    assert position.altitude == 35.5
    assert position.accuracy == 4.0
    assert position.valid is False
    assert position.attributes == {
        "hdop": 0.9,
        "batteryLevel": 87.0,
        "charge": True,
        "driver": "ann",
        "ignition": True,
        "rpm": 1500,
        "temp": 21.5,
    }


@pytest.mark.parametrize(
    "timestamp",
    ["1767225600", "1767225600000", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00", "2026-01-01 00:00:00"],
)
def test_timestamp_forms(timestamp: str) -> None:
    _, position = decode_osmand({"id": "d", "lat": "1", "lon": "2", "timestamp": timestamp}, now=NOW)
    assert position.fix_time == datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_missing_timestamp_is_the_server_time_and_location_form() -> None:
    _, position = decode_osmand({"deviceid": "d", "location": "10.5,20.25"}, now=NOW)
    assert position.fix_time == NOW.timestamp()
    assert (position.latitude, position.longitude) == (10.5, 20.25)


@pytest.mark.parametrize(("unit", "knots"), [("kn", 10.0), ("kmh", 10 / 1.852), ("mps", 10 * 3600 / 1852)])
def test_speed_units(unit: str, knots: float) -> None:
    _, position = decode_osmand({"id": "d", "lat": "1", "lon": "2", "speed": "10"}, now=NOW, speed_unit=unit)
    assert position.speed == pytest.approx(knots)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lat": "1", "lon": "2"}, "id"),
        ({"id": "  ", "lat": "1", "lon": "2"}, "id"),
        ({"id": "d", "lon": "2"}, "lat"),
        ({"id": "d", "lat": "1"}, "lon"),
        ({"id": "d", "lat": "north", "lon": "2"}, "lat"),
        ({"id": "d", "lat": "91", "lon": "2"}, "lat"),
        ({"id": "d", "lat": "-90.5", "lon": "2"}, "lat"),
        ({"id": "d", "lat": "1", "lon": "180.1"}, "lon"),
        ({"id": "d", "lat": "nan", "lon": "2"}, "lat"),
        ({"id": "d", "lat": "1", "lon": "inf"}, "lon"),
        ({"id": "d", "lat": "1", "lon": "2", "timestamp": "yesterday"}, "timestamp"),
        ({"id": "d", "lat": "1", "lon": "2", "timestamp": "99999999999999999999"}, "timestamp"),
        ({"id": "d", "lat": "1", "lon": "2", "speed": "fast"}, "speed"),
        ({"id": "d", "lat": "1", "lon": "2", "speed": "1e308"}, "speed"),  # finite in m/s, not in knots
        ({"id": "d", "location": "1;2"}, "location"),
        ({"id": "x" * 129, "lat": "1", "lon": "2"}, "id"),
    ],
)
def test_bad_fields_are_named(params: dict[str, str], field: str) -> None:
    with pytest.raises(FieldError) as raised:
        decode_osmand(params, now=NOW, speed_unit="mps")
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("location", "field"),
    [
        ({"coords": {"latitude": 1, "longitude": 2, "speed": 1e308}}, "location.coords.speed"),
        ({"coords": {"latitude": 1, "longitude": 2}, "battery": {"level": 1e307}}, "location.battery.level"),
        ({"coords": {"latitude": 1, "longitude": 2}, "battery": {"level": 1.5}}, "location.battery.level"),
    ],
)
def test_traccar_client_numbers_out_of_range_are_named(location: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as raised:
        decode_traccar_client_json({"device_id": "phone", "location": location}, now=NOW)
    assert raised.value.field == field


def test_a_speed_or_course_not_reported_is_none_and_a_reported_zero_stays_zero() -> None:
    _, silent = decode_osmand({"id": "d", "lat": "1", "lon": "2"}, now=NOW)
    assert (silent.speed, silent.course) == (None, None)
    _, standing = decode_osmand({"id": "d", "lat": "1", "lon": "2", "speed": "0", "bearing": "0"}, now=NOW)
    assert (standing.speed, standing.course) == (0.0, 0.0)
    location = {"coords": {"latitude": 1, "longitude": 2, "speed": -1, "heading": -1}}
    _, unknown = decode_traccar_client_json({"device_id": "phone", "location": location}, now=NOW)
    assert (unknown.speed, unknown.course) == (None, None)
