"""Trips and stops of one device's time-sorted positions, vectorised with numpy (no Python loop per position).

The rules (Traccar's default logic): a device is moving once it is at least `min_distance_m` from where it
stopped; it is stopped once it stays within `min_distance_m` of a position for `min_duration_s`; a silence
longer than `stop_gap_s` is a stop. A trip runs from the last position of the stop it leaves (the departure)
to the first position of the stop it reaches (the arrival); a stop runs from its arrival to its departure.

Traccar's legacy safeguards against noise: a trip is kept only when its distance reaches
`min_trip_distance_m` (by default `min_distance_m`) and its duration `min_trip_duration_s`; a shorter movement (a bus creeping a few
metres at a time through a jam, GPS drift at a depot) joins the stop around it: the stops before and
after it become one. A short movement before the first stop joins that stop; one after the last stop
(still moving when the positions end) extends it; one with no stop around it is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tracker_jobs.core.geo import EARTH_RADIUS_M
from tracker_jobs.core.trip_rule import DetectionParams

US_PER_S = 1_000_000  # fix times travel as integer microseconds
# A window is searched in chunks that grow by this factor: a long stop costs few numpy calls.
_FIRST_CHUNK = 64
_CHUNK_GROWTH = 4
_BOX_WORTH_IT = 4  # positions left to check one by one, per position of the track

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Detection:
    """Indexes into the positions: trip i runs trip_starts[i]..trip_ends[i], stop i stop_starts[i]..stop_ends[i].

    `steps` holds each position's distance from the one before (0 for the first), in metres.
    """

    trip_starts: IntArray
    trip_ends: IntArray
    stop_starts: IntArray
    stop_ends: IntArray
    steps: FloatArray


@dataclass(frozen=True)
class _Sphere:
    """Positions in radians and as unit vectors, computed once for every distance taken.

    Distances are great-circle distances, as Traccar's haversine gives them, taken from the chord between
    unit vectors (haversine's a is (chord/2)^2): no trigonometric function per pair of positions.
    """

    phi: FloatArray
    lam: FloatArray
    cos_phi: FloatArray
    xyz: tuple[FloatArray, FloatArray, FloatArray]

    @classmethod
    def of(cls, latitude: FloatArray, longitude: FloatArray) -> _Sphere:
        phi, lam = np.radians(latitude), np.radians(longitude)
        cos_phi = np.cos(phi)
        return cls(phi, lam, cos_phi, (cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)))

    def _chord_squared(self, origin: IntArray | int | slice, other: IntArray | slice) -> FloatArray:
        x, y, z = self.xyz
        return np.asarray((x[other] - x[origin]) ** 2 + (y[other] - y[origin]) ** 2 + (z[other] - z[origin]) ** 2)

    def steps_m(self) -> FloatArray:
        """Each position's distance from the one before (0 for the first)."""
        steps = np.zeros(len(self.phi))
        chord = np.sqrt(self._chord_squared(slice(None, -1), slice(1, None)))
        steps[1:] = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(chord / 2, 1.0))
        return steps

    def far(self, origin: IntArray | int, other: IntArray | slice, distance_m: float) -> BoolArray:
        """Whether each other position is at least `distance_m` from its origin."""
        threshold = (2 * np.sin(distance_m / (2 * EARTH_RADIUS_M))) ** 2
        return np.asarray(self._chord_squared(origin, other) >= threshold, dtype=bool)


def detect(fix_time_us: IntArray, latitude: FloatArray, longitude: FloatArray, params: DetectionParams) -> Detection:
    """Trips and stops of one device; positions sorted by fix time (epoch microseconds), no two at one time."""
    count = len(fix_time_us)
    sphere = _Sphere.of(latitude, longitude)
    steps = sphere.steps_m()
    travelled = np.cumsum(steps)
    segment_end, gap_after = _segments(fix_time_us, round(params.stop_gap_s * US_PER_S))
    next_arrival = _next_true(_arrival_possible(fix_time_us, sphere, travelled, segment_end, gap_after, params))
    min_trip_us = round(params.min_trip_duration_s * US_PER_S)

    def short(first: int, last: int) -> bool:
        too_near = travelled[last] - travelled[first] < params.trip_distance_m
        return bool(too_near or fix_time_us[last] - fix_time_us[first] < min_trip_us)

    trips: list[tuple[int, int]] = []
    stops: list[tuple[int, int]] = []
    stopped = bool(count) and next_arrival[0] == 0
    stop_start = anchor = departure = 0
    # One turn per stop, trip or silence: the positions in between are handled by numpy.
    while count:
        if stopped:
            end = int(segment_end[anchor])
            far = _first_far(sphere, anchor, end, params.min_distance_m)
            if far is not None:
                departure = far - 1
                stops.append((stop_start, departure))
                stopped = False
            elif end < count - 1:
                anchor = end + 1  # after a silence the device is where it reappears
            else:
                stops.append((stop_start, count - 1))
                break
        else:
            reached = int(next_arrival[departure + 1]) if departure + 1 < count else count
            stop_before = bool(stops) and stops[-1][1] == departure
            if reached == count:
                if departure < count - 1:  # still moving when the positions end
                    if not short(departure, count - 1):
                        trips.append((departure, count - 1))
                    elif stop_before:
                        stops[-1] = (stops[-1][0], count - 1)
                break
            if short(departure, reached):  # the stop goes on from before the movement, or from its start
                stop_start = stops.pop()[0] if stop_before else departure
            else:
                trips.append((departure, reached))
                stop_start = reached
            anchor = reached
            stopped = True
    return Detection(*_columns(trips), *_columns(stops), steps)


def _columns(pairs: list[tuple[int, int]]) -> tuple[IntArray, IntArray]:
    table = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return table[:, 0].copy(), table[:, 1].copy()


def _segments(fix_time_us: IntArray, stop_gap_us: int) -> tuple[IntArray, BoolArray]:
    """For each position, the last position before the next silence; and which positions a silence follows."""
    count = len(fix_time_us)
    gap_after = np.zeros(count, dtype=bool)
    gap_after[:-1] = np.diff(fix_time_us) > stop_gap_us
    ends = np.flatnonzero(gap_after | (np.arange(count) == count - 1))
    segment_end = ends[np.searchsorted(ends, np.arange(count))]
    return segment_end.astype(np.int64), gap_after


def _arrival_possible(
    fix_time_us: IntArray,
    sphere: _Sphere,
    travelled: FloatArray,
    segment_end: IntArray,
    gap_after: BoolArray,
    params: DetectionParams,
) -> BoolArray:
    """Whether a moving device reaching each position would be stopped there.

    It is when every later position up to the first one `min_duration_s` after it stays within
    `min_distance_m`, or when the positions up to a silence do. The end of the data confirms nothing.
    """
    positions = np.arange(len(fix_time_us))
    settled = np.searchsorted(fix_time_us, fix_time_us + round(params.min_duration_s * US_PER_S), side="left")
    confirmed = settled <= segment_end
    window_end = np.where(confirmed, settled, segment_end)
    possible = confirmed | gap_after[segment_end]
    candidates = positions[possible]
    possible[candidates] = _all_within(sphere, travelled, candidates, window_end[candidates], params.min_distance_m)
    return possible


def _all_within(
    sphere: _Sphere, travelled: FloatArray, origins: IntArray, window_ends: IntArray, distance_m: float
) -> BoolArray:
    """For each origin, whether every position after it up to its window end is closer than `distance_m`.

    Cheap answers first: a next position already far; a path shorter than the distance (no position on it
    can be farther); a bounding box within it. What is left is checked position by position, in step.
    """
    within = np.ones(len(origins), dtype=bool)
    lengths = window_ends - origins
    undecided = np.flatnonzero(lengths > 0)
    next_far = sphere.far(origins[undecided], origins[undecided] + 1, distance_m)
    within[undecided[next_far]] = False
    undecided = undecided[~next_far & (lengths[undecided] > 1)]
    # The margin absorbs rounding, so a shortcut never disagrees with the exact check near the threshold.
    short = travelled[window_ends[undecided]] - travelled[origins[undecided]] < distance_m * (1 - 1e-9)
    undecided = undecided[~short]
    # Boxes cost a few passes over the whole track: worth it only when many long windows are left.
    if lengths[undecided].sum() > _BOX_WORTH_IT * len(travelled):
        undecided = _not_bounded(sphere, origins, lengths, undecided, distance_m)
    offset = 2
    while undecided.size:
        origin = origins[undecided]
        far = sphere.far(origin, origin + offset, distance_m)
        within[undecided[far]] = False
        undecided = undecided[~far & (offset < lengths[undecided])]
        offset += 1
    return within


def _not_bounded(
    sphere: _Sphere, origins: IntArray, lengths: IntArray, candidates: IntArray, distance_m: float
) -> IntArray:
    """The candidates whose window a bounding box cannot prove to lie within `distance_m`.

    The box of positions origin+1 .. origin+2^k (a superset of the window) comes from running minima and
    maxima doubled level by level, so a parked device's long windows cost a few array passes.
    """
    proven = np.zeros(len(origins), dtype=bool)
    low_phi, high_phi, low_lam, high_lam = sphere.phi, sphere.phi, sphere.lam, sphere.lam
    pending, size = candidates, 1
    while pending.size:
        fits = lengths[pending] <= size
        level = pending[fits]
        first, origin = origins[level] + 1, origins[level]
        box = (low_phi[first], high_phi[first], low_lam[first], high_lam[first])
        proven[level] = _box_within(sphere.phi[origin], sphere.lam[origin], sphere.cos_phi[origin], box, distance_m)
        pending = pending[~fits]
        if pending.size:
            low_phi, high_phi = _widen(np.minimum, low_phi, size), _widen(np.maximum, high_phi, size)
            low_lam, high_lam = _widen(np.minimum, low_lam, size), _widen(np.maximum, high_lam, size)
            size *= 2
    return candidates[~proven[candidates]]


def _widen(extreme: np.ufunc, values: FloatArray, size: int) -> FloatArray:
    """Each position's extreme over itself and the value `size` later (the last one past the end)."""
    widened = extreme(values, values[-1])
    widened[:-size] = extreme(values[:-size], values[size:])
    return np.asarray(widened, dtype=np.float64)


def _box_within(
    phi: FloatArray,
    lam: FloatArray,
    cos_phi: FloatArray,
    box: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    distance_m: float,
) -> BoolArray:
    """Whether every point of each box (radians) is surely closer than `distance_m` to its origin.

    The haversine term grows with |dphi|, |dlambda| and the cosine of the far latitude, so their extremes
    over the box bound every point in it; boxes wider than half the globe in longitude are left undecided.
    """
    low_phi, high_phi, low_lam, high_lam = box
    dphi = np.maximum(high_phi - phi, phi - low_phi)
    dlam = np.maximum(high_lam - lam, lam - low_lam)
    nearest_to_equator = np.where((low_phi <= 0) & (high_phi >= 0), 0.0, np.minimum(np.abs(low_phi), np.abs(high_phi)))
    a = np.sin(dphi / 2) ** 2 + cos_phi * np.cos(nearest_to_equator) * np.sin(dlam / 2) ** 2
    bound = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
    # The margin absorbs rounding, so a proof never disagrees with the exact check near the threshold.
    return np.asarray((dlam <= np.pi) & (bound < distance_m * (1 - 1e-9)), dtype=bool)


def _next_true(flags: BoolArray) -> IntArray:
    """For each index, the first index at or after it where `flags` is set (len(flags) when none)."""
    count = len(flags)
    marked = np.where(flags, np.arange(count), count)
    return np.minimum.accumulate(marked[::-1])[::-1].astype(np.int64)


def _first_far(sphere: _Sphere, anchor: int, last: int, distance_m: float) -> int | None:
    """The first position after `anchor`, up to `last`, at least `distance_m` from it."""
    start, size = anchor + 1, _FIRST_CHUNK
    while start <= last:
        stop = min(last, start + size - 1)
        far = np.flatnonzero(sphere.far(anchor, slice(start, stop + 1), distance_m))
        if far.size:
            return start + int(far[0])
        start, size = stop + 1, size * _CHUNK_GROWTH
    return None
