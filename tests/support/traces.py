"""Made-up traces built from parking, driving and silence, whose trips and stops are known by construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from tests.support.loop_detection import distance_m
from tracker_jobs.reports.loading import Track, epoch_us

METRES_PER_DEGREE = 111_319.49


@dataclass
class Fix:
    fix_time: datetime
    latitude: float
    longitude: float
    speed: float
    position_id: int


@dataclass
class Trace:
    """Positions every `every_s` seconds; blocks return the index range they added."""

    start: datetime
    first_id: int = 1
    origin: tuple[float, float] = (52.5, 13.4)
    fixes: list[Fix] = field(default_factory=list)
    north_m: float = 0.0
    east_m: float = 0.0
    clock: datetime | None = None

    def _add(self, speed: float, north_m: float = 0.0, east_m: float = 0.0) -> None:
        latitude = self.origin[0] + (self.north_m + north_m) / METRES_PER_DEGREE
        longitude = self.origin[1] + (self.east_m + east_m) / (
            METRES_PER_DEGREE * math.cos(math.radians(self.origin[0]))
        )
        when = self.clock or self.start
        self.fixes.append(Fix(when, latitude, longitude, speed, self.first_id + len(self.fixes)))

    def park(self, count: int, every_s: int = 30, jitter_m: tuple[tuple[float, float], ...] = ((0.0, 0.0),)) -> range:
        first = len(self.fixes)
        for index in range(count):
            self.clock = (self.clock or self.start) + timedelta(seconds=every_s) if self.fixes else self.start
            north, east = jitter_m[index % len(jitter_m)]
            self._add(0.0, north, east)
        return range(first, len(self.fixes))

    def drive(self, count: int, step_m: float, every_s: int = 30, speed: float = 20.0) -> range:
        first = len(self.fixes)
        for index in range(count):
            self.clock = (self.clock or self.start) + timedelta(seconds=every_s) if self.fixes else self.start
            self.east_m += step_m
            self._add(speed + index)
        return range(first, len(self.fixes))

    def silence(self, seconds: int) -> None:
        self.clock = (self.clock or self.start) + timedelta(seconds=seconds)

    def track(self) -> Track:
        return Track(
            position_id=np.array([fix.position_id for fix in self.fixes], dtype=np.int64),
            fix_time_us=epoch_us([fix.fix_time for fix in self.fixes]),
            latitude=np.array([fix.latitude for fix in self.fixes]),
            longitude=np.array([fix.longitude for fix in self.fixes]),
            speed=np.array([fix.speed for fix in self.fixes]),
        )

    def road_m(self, first: int, last: int) -> float:
        return sum(distance_m(self.fixes[i - 1], self.fixes[i]) for i in range(first + 1, last + 1))

    def expected_trip(self, first: int, last: int, device_id: int = 1, name: str = "van") -> dict[str, Any]:
        start, end = self.fixes[first], self.fixes[last]
        duration_ms = (end.fix_time - start.fix_time) // timedelta(milliseconds=1)
        distance = self.road_m(first, last)
        return {
            "deviceId": device_id,
            "deviceName": name,
            "startTime": start.fix_time,
            "endTime": end.fix_time,
            "duration": duration_ms,
            "distance": distance,
            "averageSpeed": distance / (duration_ms / 1000) / (1852 / 3600),
            "maxSpeed": max(fix.speed for fix in self.fixes[first : last + 1]),
            "startLat": start.latitude,
            "startLon": start.longitude,
            "endLat": end.latitude,
            "endLon": end.longitude,
            "startOdometer": None,
            "endOdometer": None,
            "startPositionId": start.position_id,
            "endPositionId": end.position_id,
            "spentFuel": None,
        }

    def expected_stop(self, first: int, last: int, device_id: int = 1, name: str = "van") -> dict[str, Any]:
        start, end = self.fixes[first], self.fixes[last]
        return {
            "deviceId": device_id,
            "deviceName": name,
            "startTime": start.fix_time,
            "endTime": end.fix_time,
            "duration": (end.fix_time - start.fix_time) // timedelta(milliseconds=1),
            "latitude": start.latitude,
            "longitude": start.longitude,
            "positionId": start.position_id,
            "engineHours": None,
        }


def assert_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same keys in the same order and equal values; floats equal up to rounding."""
    assert len(actual) == len(expected)
    for got, wanted in zip(actual, expected, strict=True):
        assert list(got) == list(wanted)
        for key, value in wanted.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
            else:
                assert got[key] == value, key


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)
