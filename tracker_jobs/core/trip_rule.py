"""The trip rule's parameters, shared by the trips report (reports/detection.py) and the motion
events of the position path (positions/motion_events.py), so the two agree by construction: the
settings' values (`trip_defaults`), overridden per device by its attributes (`with_attributes`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol


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


# Device attributes that override the settings, in Traccar's report option names.
PARAMETER_ATTRIBUTES = {
    "minDistance": "min_distance_m",
    "minDuration": "min_duration_s",
    "stopGap": "stop_gap_s",
    "minTripDistance": "min_trip_distance_m",
    "minTripDuration": "min_trip_duration_s",
}
# The trip minimums may be 0 (the guard off); the others must be positive.
_MAY_BE_ZERO = {"minTripDistance", "minTripDuration"}


class TripSettings(Protocol):
    """The trip rule's settings, as Settings and the position pipeline's config both carry them."""

    @property
    def report_min_distance_m(self) -> int: ...
    @property
    def report_min_duration_s(self) -> int: ...
    @property
    def report_stop_gap_s(self) -> int: ...
    @property
    def report_min_trip_distance_m(self) -> int | None: ...
    @property
    def report_min_trip_duration_s(self) -> int: ...


def trip_defaults(settings: TripSettings) -> DetectionParams:
    """The parameters the settings give (TRACKER_REPORT_*)."""
    min_trip_distance = settings.report_min_trip_distance_m
    return DetectionParams(
        settings.report_min_distance_m,
        settings.report_min_duration_s,
        settings.report_stop_gap_s,
        min_trip_distance_m=None if min_trip_distance is None else float(min_trip_distance),
        min_trip_duration_s=settings.report_min_trip_duration_s,
    )


def with_attributes(defaults: DetectionParams, attributes: Mapping[str, Any]) -> tuple[DetectionParams, dict[str, str]]:
    """`defaults` overridden by the device's valid attributes (PARAMETER_ATTRIBUTES), and what is wrong
    with each invalid one (attribute -> problem), which leaves its setting in force. A trip distance
    left unset follows the device's own minDistance."""
    values = asdict(defaults)
    problems: dict[str, str] = {}
    for attribute, name in PARAMETER_ATTRIBUTES.items():
        if attribute not in attributes:
            continue
        value = attributes[attribute]
        low_ok = attribute in _MAY_BE_ZERO
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (value >= 0 if low_ok else value > 0)
            or not value < math.inf
        ):
            kind = "a number of 0 or more" if low_ok else "a positive number"
            problems[attribute] = f"must be {kind}, got {value!r}"
            continue
        values[name] = float(value)
    return DetectionParams(**values), problems
