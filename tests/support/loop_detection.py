"""Trip and stop detection written straightforwardly: a Python loop per position over ORM-like rows.

The tests compare it with the vectorised detection on random traces; bench/reports.py times it as the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from tracker_jobs.core.trip_rule import DetectionParams
from tracker_jobs.reports.detection import EARTH_RADIUS_M


class Fix(Protocol):
    fix_time: datetime
    latitude: float
    longitude: float


def distance_m(a: Fix, b: Fix) -> float:
    phi1, phi2 = math.radians(a.latitude), math.radians(b.latitude)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(b.longitude - a.longitude) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(max(h, 0.0), 1.0)))


def detect_by_loop(
    positions: Sequence[Fix], params: DetectionParams
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(trips, stops) as (first index, last index) pairs."""

    def seconds(i: int, j: int) -> float:
        return (positions[j].fix_time - positions[i].fix_time).total_seconds()

    def stays(i: int) -> bool:
        for j in range(i + 1, len(positions)):
            if seconds(j - 1, j) > params.stop_gap_s:
                return True
            if distance_m(positions[i], positions[j]) >= params.min_distance_m:
                return False
            if seconds(i, j) >= params.min_duration_s:
                return True
        return False

    def short(first: int, last: int) -> bool:
        travelled = sum(distance_m(positions[k - 1], positions[k]) for k in range(first + 1, last + 1))
        minimum = params.min_distance_m if params.min_trip_distance_m is None else params.min_trip_distance_m
        return travelled < minimum or seconds(first, last) < params.min_trip_duration_s

    trips: list[tuple[int, int]] = []
    stops: list[tuple[int, int]] = []
    if not positions:
        return trips, stops
    stopped = stays(0)
    anchor = stop_start = departure = 0
    for i in range(1, len(positions)):
        if stopped:
            if seconds(i - 1, i) > params.stop_gap_s:
                anchor = i
            elif distance_m(positions[anchor], positions[i]) >= params.min_distance_m:
                departure = i - 1
                stops.append((stop_start, departure))
                stopped = False
        if not stopped and stays(i):
            stopped = True
            anchor = stop_start = i
            if not short(departure, i):
                trips.append((departure, i))
            elif stops and stops[-1][1] == departure:  # the movement joins the stop before it
                stop_start = stops.pop()[0]
            else:
                stop_start = departure
    last = len(positions) - 1
    if stopped:
        stops.append((stop_start, last))
    elif departure < last:
        if not short(departure, last):
            trips.append((departure, last))
        elif stops and stops[-1][1] == departure:
            stops[-1] = (stops[-1][0], last)
    return trips, stops
