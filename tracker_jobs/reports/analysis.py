"""One device's trips, stops and summary as frames in the report's columns (pure pandas, no database).

Frames keep times as UTC datetime64 and carry the ids of their boundary positions, whose attributes
(odometer, fuel, engine hours) are looked up afterwards for the few positions that need them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from tracker_jobs.core.trip_rule import DetectionParams, with_attributes
from tracker_jobs.reports.detection import Detection, detect
from tracker_jobs.reports.loading import DeviceInfo, Track
from tracker_jobs.reports.sections import SECTION_COLUMNS

KNOT_MPS = 1852 / 3600
# Columns that only carry boundary position ids to the attribute lookup; dropped before output.
_START_ID, _END_ID = "_startPositionId", "_endPositionId"
_SUMMARY_COLUMNS = [column.name for column in SECTION_COLUMNS["summary"]]


@dataclass(frozen=True)
class DeviceFrames:
    trips: pd.DataFrame
    stops: pd.DataFrame
    summary: pd.DataFrame

    def boundary_ids(self) -> set[int]:
        ids: set[int] = set()
        for frame, columns in (
            (self.trips, ("startPositionId", "endPositionId")),
            (self.stops, ("positionId", _END_ID)),
            (self.summary, (_START_ID, _END_ID)),
        ):
            for column in columns:
                ids.update(int(value) for value in frame[column].dropna())
        return ids


def detection_params(defaults: DetectionParams, device: DeviceInfo) -> DetectionParams:
    """The settings, overridden by the device's attributes (core/trip_rule.py with_attributes); a
    ValueError naming the first invalid one, which fails that device's report."""
    params, problems = with_attributes(defaults, device.attributes)
    for attribute, problem in problems.items():
        raise ValueError(f"device {device.id}: attribute {attribute} {problem}")
    return params


def analyse(device: DeviceInfo, track: Track, params: DetectionParams, daily_timezone: str | None) -> DeviceFrames:
    """Trips, stops and the summary (one row, or one per local day when `daily_timezone` is given)."""
    detection = detect(track.fix_time_us, track.latitude, track.longitude, params)
    return DeviceFrames(
        trips=_trips(device, track, detection, np.cumsum(detection.steps)),
        stops=_stops(device, track, detection),
        summary=_summary(device, track, detection, daily_timezone),
    )


def _times(values_us: npt.NDArray[np.int64]) -> pd.DatetimeIndex:
    return pd.to_datetime(values_us, unit="us", utc=True)


def _knots(distance_m: npt.NDArray[np.float64], duration_us: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    seconds = duration_us / 1e6
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = np.where(seconds > 0, distance_m / seconds / KNOT_MPS, 0.0)
    return np.asarray(speed, dtype=np.float64)


def _unknown(count: int) -> list[None]:
    return [None] * count


def _range_max(values: npt.NDArray[np.float64], starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]) -> Any:
    """max(values[start..end]) for each inclusive range; ranges are ordered and do not overlap."""
    if not len(starts):
        return np.zeros(0)
    before_end = np.maximum.reduceat(values, np.column_stack([starts, ends]).ravel())[::2]
    return np.maximum(before_end, values[ends])


def _span(
    device: DeviceInfo, track: Track, first: npt.NDArray[np.int64], last: npt.NDArray[np.int64]
) -> dict[str, Any]:
    """The columns trips and stops begin with: the device, when they start and end, how long (ms)."""
    return {
        "deviceId": np.full(len(first), device.id),
        "deviceName": [device.name] * len(first),
        "startTime": _times(track.fix_time_us[first]),
        "endTime": _times(track.fix_time_us[last]),
        "duration": (track.fix_time_us[last] - track.fix_time_us[first]) // 1000,
    }


def _trips(device: DeviceInfo, track: Track, detection: Detection, travelled: npt.NDArray[np.float64]) -> pd.DataFrame:
    first, last = detection.trip_starts, detection.trip_ends
    duration_us = track.fix_time_us[last] - track.fix_time_us[first]
    distance = travelled[last] - travelled[first]
    count = len(first)
    return pd.DataFrame(
        {
            **_span(device, track, first, last),
            "distance": distance,
            "averageSpeed": _knots(distance, duration_us),
            "maxSpeed": _range_max(track.speed, first, last),
            "startLat": track.latitude[first],
            "startLon": track.longitude[first],
            "endLat": track.latitude[last],
            "endLon": track.longitude[last],
            "startOdometer": _unknown(count),
            "endOdometer": _unknown(count),
            "startPositionId": track.position_id[first],
            "endPositionId": track.position_id[last],
            "spentFuel": _unknown(count),
        }
    )


def _stops(device: DeviceInfo, track: Track, detection: Detection) -> pd.DataFrame:
    first, last = detection.stop_starts, detection.stop_ends
    count = len(first)
    return pd.DataFrame(
        {
            **_span(device, track, first, last),
            "latitude": track.latitude[first],
            "longitude": track.longitude[first],
            "positionId": track.position_id[first],
            "engineHours": _unknown(count),
            _END_ID: track.position_id[last],
        }
    )


def _summary(
    device: DeviceInfo,
    track: Track,
    detection: Detection,
    daily_timezone: str | None,
) -> pd.DataFrame:
    """`distance` counts every step (the odometer's advance, as the device statistics give it);
    `drivingDistance` and driving time only the steps inside trips; a step belongs to the day it ends in."""
    count = len(track)
    if not count:
        return _empty_summary(device, rows=0 if daily_timezone else 1)
    marks = np.zeros(count + 1, dtype=np.int64)
    marks[detection.trip_starts + 1] += 1
    marks[detection.trip_ends + 1] -= 1
    driving = np.cumsum(marks)[:count] > 0  # step i (from position i-1) lies in a trip
    step_us = np.diff(track.fix_time_us, prepend=track.fix_time_us[0])
    firsts = _group_starts(track.fix_time_us, daily_timezone)
    lasts = np.r_[firsts[1:], count] - 1
    distance = np.add.reduceat(detection.steps, firsts)
    driving_distance = np.add.reduceat(np.where(driving, detection.steps, 0.0), firsts)
    driving_us = np.add.reduceat(np.where(driving, step_us, 0), firsts)
    rows = len(firsts)
    return pd.DataFrame(
        {
            "deviceId": np.full(rows, device.id),
            "deviceName": [device.name] * rows,
            "startTime": _times(track.fix_time_us[firsts]),
            "endTime": _times(track.fix_time_us[lasts]),
            "distance": distance,
            "drivingDistance": driving_distance,
            "averageSpeed": _knots(driving_distance, driving_us),
            "maxSpeed": np.maximum.reduceat(track.speed, firsts),
            "startOdometer": _unknown(rows),
            "endOdometer": _unknown(rows),
            "engineHours": _unknown(rows),
            "spentFuel": _unknown(rows),
            _START_ID: track.position_id[firsts],
            _END_ID: track.position_id[lasts],
        }
    )


def _empty_summary(device: DeviceInfo, rows: int) -> pd.DataFrame:
    """A device without positions: a row of zeros for the range, none for days."""
    values: dict[str, list[Any]] = {name: _unknown(rows) for name in (*_SUMMARY_COLUMNS, _START_ID, _END_ID)}
    if rows:
        values.update(
            deviceId=[device.id],
            deviceName=[device.name],
            distance=[0.0],
            drivingDistance=[0.0],
            averageSpeed=[0.0],
            maxSpeed=[0.0],
        )
    return pd.DataFrame(values)


def _group_starts(fix_time_us: npt.NDArray[np.int64], timezone: str | None) -> npt.NDArray[np.int64]:
    """Where each local day starts among the positions, or just the first position without a time zone."""
    if timezone is None:
        return np.zeros(1, dtype=np.int64)
    local_days = _times(fix_time_us).tz_convert(timezone).tz_localize(None).normalize().asi8
    return np.flatnonzero(np.r_[True, local_days[1:] != local_days[:-1]]).astype(np.int64)


def attach_attributes(frames: DeviceFrames, attributes: Mapping[int, Mapping[str, Any]]) -> DeviceFrames:
    """Odometers, spent fuel and engine hours from the boundary positions' attributes; internal columns dropped."""

    def values(ids: pd.Series[Any], read: Callable[[Mapping[str, Any]], float | None]) -> list[float | None]:
        return [None if pd.isna(i) else read(attributes.get(int(i), {})) for i in ids]

    trips, stops, summary = frames.trips.copy(), frames.stops.copy(), frames.summary.copy()
    trips["startOdometer"] = values(trips["startPositionId"], odometer)
    trips["endOdometer"] = values(trips["endPositionId"], odometer)
    trips["spentFuel"] = _differences(values(trips["startPositionId"], fuel), values(trips["endPositionId"], fuel))
    stops["engineHours"] = _differences(values(stops[_END_ID], hours), values(stops["positionId"], hours))
    summary["startOdometer"] = values(summary[_START_ID], odometer)
    summary["endOdometer"] = values(summary[_END_ID], odometer)
    summary["engineHours"] = _differences(values(summary[_END_ID], hours), values(summary[_START_ID], hours))
    summary["spentFuel"] = _differences(values(summary[_START_ID], fuel), values(summary[_END_ID], fuel))
    return DeviceFrames(trips, stops.drop(columns=[_END_ID]), summary.drop(columns=[_START_ID, _END_ID]))


def _number(attributes: Mapping[str, Any], key: str) -> float | None:
    value = attributes.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def odometer(attributes: Mapping[str, Any]) -> float | None:
    """The device's own odometer when it sends one, else the distance the pipeline adds up (Traccar's order)."""
    reported = _number(attributes, "odometer")
    return reported if reported else _number(attributes, "totalDistance")


def fuel(attributes: Mapping[str, Any]) -> float | None:
    return _number(attributes, "fuel")


def hours(attributes: Mapping[str, Any]) -> float | None:
    return _number(attributes, "hours")


def _differences(minuends: Sequence[float | None], subtrahends: Sequence[float | None]) -> list[float | None]:
    return [None if a is None or b is None else a - b for a, b in zip(minuends, subtrahends, strict=True)]


def totals(device_count: int, summary: pd.DataFrame, trips: pd.DataFrame, stops: pd.DataFrame) -> dict[str, Any]:
    """Fleet totals: distances and top speed from the summaries, driving time from the trips."""
    distance = float(summary["distance"].fillna(0.0).sum()) if len(summary) else 0.0
    driving = float(summary["drivingDistance"].fillna(0.0).sum()) if len(summary) else 0.0
    duration = int(trips["duration"].sum()) if len(trips) else 0
    speeds = summary["maxSpeed"].dropna() if len(summary) else pd.Series(dtype=float)
    return {
        "devices": device_count,
        "trips": len(trips),
        "stops": len(stops),
        "distance": distance,
        "drivingDistance": driving,
        "duration": duration,
        "averageSpeed": float(_knots(np.array([driving]), np.array([duration * 1000]))[0]),
        "maxSpeed": float(speeds.max()) if len(speeds) else 0.0,
    }


def frame_rows(frame: pd.DataFrame, section: str) -> list[dict[str, Any]]:
    """A frame's rows as plain Python values in the section's column order (times as aware datetimes)."""
    columns = SECTION_COLUMNS[section]
    values: list[Iterable[Any]] = []
    for column in columns:
        series = frame[column.name]
        if column.type == "time":
            series = pd.Series(pd.to_datetime(series, utc=True).dt.to_pydatetime(), dtype=object)
        values.append(series.astype(object).where(series.notna(), None).tolist())
    names = [column.name for column in columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
