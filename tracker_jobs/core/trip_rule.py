"""The trip rule's parameters, shared by the trips report (reports/detection.py) and the motion
events of the position path (positions/motion_events.py), so the two agree by construction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectionParams:
    """Moving once `min_distance_m` from where the device stopped; stopped after `min_duration_s`
    within it, or a silence longer than `stop_gap_s`; shorter trips join their stops."""

    min_distance_m: float
    min_duration_s: float
    stop_gap_s: float
    min_trip_distance_m: float | None = None  # None: min_distance_m
    min_trip_duration_s: float = 0.0

    @property
    def trip_distance_m(self) -> float:
        return self.min_distance_m if self.min_trip_distance_m is None else self.min_trip_distance_m
