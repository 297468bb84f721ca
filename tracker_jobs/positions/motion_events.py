"""deviceMoving / deviceStopped: the trips report's rule (reports/detection.py), followed as positions arrive,
so that events and trips agree.

The rule, with the report's parameters (`DetectionParams`: the settings TRACKER_REPORT_MIN_DISTANCE,
_MIN_DURATION, _STOP_GAP, _MIN_TRIP_DISTANCE, _MIN_TRIP_DURATION, overridden by the device's attributes
`minDistance`, `minDuration`, `stopGap`, `minTripDistance`, `minTripDuration`, exactly as the report
resolves them):

- A stopped device departs once a position is `minDistance` or more from the one it stopped at (its
  anchor): the departure is the position before that one. After a silence longer than `stopGap` the
  anchor is where the device reappears.
- A moving device arrives at the first position after its departure that is an arrival: every later
  position up to the first one `minDuration` after it stays within `minDistance` of it, or the positions
  up to a silence longer than `stopGap` do (the end of the positions confirms nothing).
- A movement whose path is shorter than `minTripDistance`, or that lasts less than `minTripDuration`,
  is no trip: it joins the stop around it and makes no event.
- A device's first position is where it starts moving from, unless that position is itself an arrival.

The exact correspondence, for a trips report over a device's valid positions from its first one (or
from its first one after this detector came in: a device without state starts afresh), computed with
the same parameters: trip i runs from departure d_i to arrival r_i (startTime/startPositionId and
endTime/endPositionId), and

- deviceMoving is stored at d_i (its time, place and position id) once the trip is certain: once a
  position after d_i is `minTripDistance` along the path and `minTripDuration` after it, and every
  possible arrival before that position is ruled out. So a report made while the device is still moving
  may show a trip "still moving" whose deviceMoving comes with a later position (the one that rules its
  last possible early arrival out); a report on positions that settle it (see below) always agrees.
  A trip that begins at the device's first position has none: the report starts the device moving
  there, but that is no change from a stop (nor a burst of events for devices already under way when
  this detector came in).
- deviceStopped is stored at r_i once the arrival is certain: with the first position `minDuration`
  after r_i, or the first one after the silence that confirms it. A trip still under way when the
  positions end has its deviceMoving (once certain) and no deviceStopped.

A device that stops and falls silent has its deviceStopped when it reports again (only then does the
silence confirm the stop; until then the report too shows it still moving). Where they can differ: a
report over a range that begins while the device moves (it starts that trip at the range's first
position); a late position (older than the device's newest) is stored and the report reads
it, but it makes no event and moves no state; a device's parameters changed between its positions; path
lengths summed in another order (the last bits of a float at a minTripDistance threshold). Invalid
positions (`valid` false) are left out here as the report leaves them out. Distances are the report's
own: great-circle from the chord between unit vectors, with Traccar's radius.

State (a device's `MotionState`) is kept on the device row (`devices.motion_state`), written in the
batch's transaction as the device's newest position moves forward, so it survives batches and restarts
and any worker continues it. `advance` is the state machine, for many devices at once: the
possible arrivals of every position are decided with numpy over the whole batch (one pass per position
of the longest `minDuration` window), then a short walk per device visits only its transitions.

An event at a position stored by an earlier batch (a departure, or an arrival decided only now) is
found at the device's newest row of this batch, marked with `tripEventAt`; `place_motion_events` moves
it to its own position, with that position's id, before the events are stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from tracker_jobs.core.db import dialect_name
from tracker_jobs.core.geo import EARTH_RADIUS_M
from tracker_jobs.core.trip_rule import PARAMETER_ATTRIBUTES, DetectionParams, with_attributes
from tracker_jobs.devices.models import Device
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.pipeline import (
    SKIP,
    Batch,
    Bools,
    Detected,
    DetectedEvent,
    Floats,
    Ints,
    PipelineConfig,
    StepResult,
)

EVENT_AT = "tripEventAt"  # an event's own position, when it is not a row of the batch
DEVICE_MOVING, DEVICE_STOPPED = "deviceMoving", "deviceStopped"
MOTION_TYPES = (DEVICE_MOVING, DEVICE_STOPPED)
US_PER_S = 1_000_000  # times are integer microseconds, as the report's and the database's

_UNDECIDED, _NOT_ARRIVAL, _ARRIVAL = -1, 0, 1
_FEW = 16  # elements a device's walk filters in Python rather than with numpy


class Point(NamedTuple):
    t_us: int
    latitude: float
    longitude: float


class Pending(NamedTuple):
    """The positions that may still turn out to be the arrival, as columns, with their path from the
    departure: arrays, so that a device's pending positions cost no Python object each."""

    t_us: Ints
    latitude: Floats
    longitude: Floats
    path_m: Floats

    @classmethod
    def of(cls, t_us: Any, latitude: Any, longitude: Any, path_m: Any) -> Pending:
        """Columns of equal length, from lists or arrays; ValueError for anything else."""
        columns = (
            np.asarray(t_us, dtype=np.int64),
            np.asarray(latitude, dtype=np.float64),
            np.asarray(longitude, dtype=np.float64),
            np.asarray(path_m, dtype=np.float64),
        )
        if any(column.ndim != 1 or len(column) != len(columns[0]) for column in columns):
            raise ValueError("pending columns differ in shape")
        if not all(np.isfinite(column).all() for column in columns[1:]):
            raise ValueError("pending columns hold a number that is not finite")
        return cls(*columns)


NO_PENDING = Pending.of([], [], [], [])


class MotionState(NamedTuple):  # a tuple: every device's state is read and written per batch, cheaply
    """Where a device's trip detection stands after its newest valid position (`last`): stopped at
    `anchor`, or moving from `departure` with `path_m` travelled since, whether its deviceMoving is
    made, and the positions since that may still turn out to be its arrival."""

    last: Point
    anchor: Point | None = None
    departure: Point | None = None
    path_m: float = 0.0
    made: bool = False
    pending: Pending = NO_PENDING

    def to_json(self) -> dict[str, Any]:
        if self.anchor is not None:
            return {"last": list(self.last), "anchor": list(self.anchor)}
        assert self.departure is not None
        return {
            "last": list(self.last),
            "from": list(self.departure),
            "path": self.path_m,
            "made": self.made,
            "pending": [column.tolist() for column in self.pending],
        }

    @classmethod
    def from_json(cls, value: object) -> MotionState | None:
        """The state a device row keeps; None for none or anything malformed (the device starts afresh)."""
        if not isinstance(value, dict):
            return None
        try:
            last = _point(value["last"])
            if "anchor" in value:
                return cls(last, anchor=_point(value["anchor"]))
            made = value["made"]
            if type(made) is not bool:
                return None
            pending = Pending.of(*value["pending"])
            return cls(last, departure=_point(value["from"]), path_m=float(value["path"]), made=made, pending=pending)
        except (KeyError, TypeError, ValueError, OverflowError):
            return None


# Cheap checks: every device's state is read for every batch. A state holds what this module wrote.
def _point(value: Any) -> Point:
    t_us, latitude, longitude = value
    if type(t_us) is not int:
        raise ValueError(value)
    return Point(t_us, float(latitude), float(longitude))


@dataclass(frozen=True)
class MotionEvent:
    type: str  # DEVICE_MOVING or DEVICE_STOPPED
    at: Point
    index: int  # the position's index among those given to `advance`; -1: a position before them


def update(
    state: MotionState | None,
    time_us: Ints,
    latitude: Floats,
    longitude: Floats,
    params: DetectionParams,
) -> tuple[MotionState | None, list[MotionEvent]]:
    """One device: its state after these valid positions (sorted by time, all after `state.last`), and
    the events they make. None: a device with no state that got no positions."""
    states, events = advance([state], [params], np.zeros(len(time_us), dtype=np.int64), time_us, latitude, longitude)
    return states[0], events[0]


def advance(
    states: Sequence[MotionState | None],
    params: Sequence[DetectionParams],
    device: Ints,
    time_us: Ints,
    latitude: Floats,
    longitude: Floats,
) -> tuple[list[MotionState | None], list[list[MotionEvent]]]:
    """Many devices at once: `device` gives each position its device's index in `states` and `params`;
    positions are sorted by that index, then time. Returns each device's new state and its events."""
    walk = _Walk.prepare(states, params, device, time_us, latitude, longitude)
    results = [walk.device(k) for k in range(len(states))]
    return [state for state, _ in results], [events for _, events in results]


def _unit(latitude: Floats, longitude: Floats) -> tuple[Floats, Floats, Floats]:
    """Unit vectors, as the report's _Sphere computes them."""
    phi, lam = np.radians(latitude), np.radians(longitude)
    cos_phi = np.cos(phi)
    return cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)


def _threshold(distance_m: float) -> float:
    """The squared chord of a great-circle distance: the report's `far` compares with it."""
    return float((2 * np.sin(distance_m / (2 * EARTH_RADIUS_M))) ** 2)


def _chord_squared(a: tuple[Floats, Floats, Floats], b: tuple[Floats, Floats, Floats]) -> Floats:
    return np.asarray((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2 + (b[2] - a[2]) ** 2)


def _next_true(flags: Bools) -> Ints:
    """For each index, the first index at or after it where `flags` is set (len(flags) when none)."""
    count = len(flags)
    marked = np.where(flags, np.arange(count), count)
    return np.minimum.accumulate(marked[::-1])[::-1].astype(np.int64)


@dataclass
class _Walk:
    """The batch's elements: per device, the pending arrivals its state holds, then its positions,
    with everything the walk needs computed over all of them at once."""

    states: Sequence[MotionState | None]
    params: Sequence[DetectionParams]
    lo: list[int]  # each device's elements: lo[k] .. hi[k]
    hi: list[int]
    t: list[int]
    latitude: list[float]
    longitude: list[float]
    xyz: tuple[Floats, Floats, Floats]
    index: list[int]  # position index, -1 for a pending arrival from the state
    is_row: Bools
    gap: list[bool]  # a silence longer than stopGap before this position
    gap_array: Bools
    step: list[float]  # metres from the position before (0 when there is none)
    cum: list[float]  # the device's path over its positions up to this one
    vpath: list[float]  # a pending arrival's path from the departure
    decision: npt.NDArray[np.int8]
    decisions: list[int]
    decided_at: list[int]
    by_gap: list[bool]
    next_arrival: list[int]
    first_hit: dict[int, int]  # a stopped device: its first element that leaves the anchor or follows a silence
    columns: Pending  # t, latitude, longitude and path so far (cum, or vpath before the batch) as arrays
    anchor_xyz: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        states: Sequence[MotionState | None],
        params: Sequence[DetectionParams],
        device: Ints,
        time_us: Ints,
        latitude: Floats,
        longitude: Floats,
    ) -> _Walk:
        slots = len(states)
        counts = np.bincount(device, minlength=slots) if len(device) else np.zeros(slots, dtype=np.int64)
        has_rows = counts > 0
        # Pending arrivals of devices moving: elements before their positions.
        v_slot: list[Ints] = []
        v_point: list[Pending] = []
        for k, state in enumerate(states):
            if state is not None and state.departure is not None and has_rows[k] and len(state.pending.t_us):
                v_slot.append(np.full(len(state.pending.t_us), k, dtype=np.int64))
                v_point.append(state.pending)
        pending = (
            Pending.of(*(np.concatenate(column) for column in zip(*v_point, strict=True))) if v_point else NO_PENDING
        )
        virtual = len(pending.t_us)
        slot = np.concatenate((*v_slot, device.astype(np.int64)))
        order = np.argsort(slot, kind="stable")  # a device's pending arrivals first, then its positions
        slot = slot[order]
        t = np.concatenate((pending.t_us, time_us))[order]
        lat = np.concatenate((pending.latitude, latitude))[order]
        lon = np.concatenate((pending.longitude, longitude))[order]
        index = np.concatenate((np.full(virtual, -1, dtype=np.int64), np.arange(len(time_us))))[order]
        vpath = np.concatenate((pending.path_m, np.full(len(time_us), np.nan)))[order]
        is_row = index >= 0
        size = len(slot)
        starts = np.searchsorted(slot, np.arange(slots), "left")
        ends = np.searchsorted(slot, np.arange(slots), "right")

        # Per device: its parameters, and its newest position before the batch (none: it starts afresh).
        gap_us = np.array([round(p.stop_gap_s * US_PER_S) for p in params], dtype=np.int64)
        settle_us = np.array([round(p.min_duration_s * US_PER_S) for p in params], dtype=np.int64)
        threshold = np.array([_threshold(p.min_distance_m) for p in params], dtype=np.float64)
        last = [state.last if state is not None else None for state in states]
        last_t = np.array([p.t_us if p else 0 for p in last], dtype=np.int64)
        last_lat = np.array([p.latitude if p else np.nan for p in last], dtype=np.float64)
        last_lon = np.array([p.longitude if p else np.nan for p in last], dtype=np.float64)
        has_last = np.array([p is not None for p in last], dtype=np.bool_)

        # Each position's predecessor: the device's position before it, or its state's last.
        rows = np.flatnonzero(is_row)
        row_slot = slot[rows]
        first_row = np.ones(len(rows), dtype=np.bool_)
        first_row[1:] = row_slot[1:] != row_slot[:-1]
        previous = np.full(len(rows), -1, dtype=np.int64)
        previous[1:] = rows[:-1]
        previous[first_row] = -1
        has_previous = np.where(first_row, has_last[row_slot], True)
        safe = np.maximum(previous, 0)
        prev_t = np.where(first_row, last_t[row_slot], t[safe])
        prev_lat = np.where(first_row, last_lat[row_slot], lat[safe])
        prev_lon = np.where(first_row, last_lon[row_slot], lon[safe])
        xyz = _unit(lat, lon)
        prev_xyz = _unit(prev_lat, prev_lon)
        chord = np.sqrt(_chord_squared(prev_xyz, (xyz[0][rows], xyz[1][rows], xyz[2][rows])))
        steps = np.where(has_previous, 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(chord / 2, 1.0)), 0.0)
        gap = np.zeros(size, dtype=np.bool_)
        gap[rows] = has_previous & (t[rows] - prev_t > gap_us[row_slot])
        step = np.zeros(size, dtype=np.float64)
        step[rows] = steps
        running = np.cumsum(step)
        cum = running - np.concatenate(([0.0], running))[starts[slot]]  # restarts at each device

        # A stopped device's first position that leaves its anchor (or follows a silence).
        anchored = [k for k, state in enumerate(states) if state is not None and state.anchor is not None]
        anchor_xyz: dict[int, tuple[float, float, float]] = {}
        first_hit: dict[int, int] = {}
        if anchored:
            anchors = [state.anchor for state in states if state is not None and state.anchor is not None]
            ax, ay, az = _unit(np.array([a.latitude for a in anchors]), np.array([a.longitude for a in anchors]))
            slot_of = np.full(slots, -1, dtype=np.int64)
            slot_of[anchored] = np.arange(len(anchored))
            for k, x, y, z in zip(anchored, ax.tolist(), ay.tolist(), az.tolist(), strict=True):
                anchor_xyz[k] = (x, y, z)
            mine = rows[slot_of[row_slot] >= 0]
            which = slot_of[slot[mine]]
            far = _chord_squared((ax[which], ay[which], az[which]), (xyz[0][mine], xyz[1][mine], xyz[2][mine]))
            hits = mine[gap[mine] | (far >= threshold[slot[mine]])]
            hit_slots, first = np.unique(slot[hits], return_index=True)
            first_hit = dict(zip(hit_slots.tolist(), hits[first].tolist(), strict=True))

        # Which positions are arrivals: only devices that move, or may start to, need to know.
        consider = np.ones(slots, dtype=np.bool_)
        for k in anchored:
            consider[k] = k in first_hit
        decision, decided_at, by_gap = _decide(slot, t, xyz, gap, settle_us, threshold, consider[slot])
        next_arrival = _next_true(decision == _ARRIVAL)
        return cls(
            states=states,
            params=params,
            lo=starts.tolist(),
            hi=ends.tolist(),
            t=t.tolist(),
            latitude=lat.tolist(),
            longitude=lon.tolist(),
            xyz=xyz,
            index=index.tolist(),
            is_row=is_row,
            gap=gap.tolist(),
            gap_array=gap,
            step=step.tolist(),
            cum=cum.tolist(),
            vpath=vpath.tolist(),
            decision=decision,
            decisions=decision.tolist(),
            decided_at=decided_at.tolist(),
            by_gap=by_gap.tolist(),
            next_arrival=next_arrival.tolist(),
            first_hit=first_hit,
            columns=Pending(t, lat, lon, np.where(is_row, cum, vpath)),
            anchor_xyz=anchor_xyz,
        )

    def point(self, e: int) -> Point:
        return Point(self.t[e], self.latitude[e], self.longitude[e])

    def device(self, k: int) -> tuple[MotionState | None, list[MotionEvent]]:
        """Walk one device's elements from transition to transition."""
        state = self.states[k]
        lo, hi = self.lo[k], self.hi[k]
        if lo == hi:
            return state, []
        if state is not None and state.anchor is not None and k not in self.first_hit:  # parked, and stays
            return MotionState(self.point(hi - 1), anchor=state.anchor), []
        params = self.params[k]
        trip_us = round(params.min_trip_duration_s * US_PER_S)
        trip_m = params.trip_distance_m
        events: list[MotionEvent] = []
        # The phase: stopped at `anchor` (an element, or the state's), or moving from `departure`.
        anchor: int | None = None
        anchor_xyz: tuple[float, float, float] | None = None
        departure: tuple[Point, int]  # the point and its position index (-1: before the batch)
        moving = True
        made = False
        path_offset = 0.0  # path(departure, element e) = path_offset + cum[e] for a position e
        cursor = lo
        first_hit: int | None = None  # the state's anchor: its hit, found for every device at once
        if state is None:  # a device's first position: moving from it, unless it is an arrival itself
            departure = (self.point(lo), self.index[lo])
            path_offset = -self.cum[lo]
            made = True  # but that is no change from a stop: no deviceMoving
        elif state.anchor is not None:
            moving = False
            anchor_xyz = self.anchor_xyz[k]
            first_hit = self.first_hit[k]
            departure = (state.last, -1)  # unused until it departs
        else:
            assert state.departure is not None
            departure = (state.departure, -1)
            made, path_offset = state.made, state.path_m

        def path(e: int) -> float:
            return self.vpath[e] if self.index[e] < 0 else path_offset + self.cum[e]

        def short(e: int) -> bool:
            start = departure[0]
            return self.t[e] == start.t_us or path(e) < trip_m or self.t[e] - start.t_us < trip_us

        hit: int | None
        while True:
            if not moving:
                if first_hit is not None:
                    hit, first_hit = first_hit, None
                else:
                    hit = self._leaves(anchor, anchor_xyz, cursor, hi, params.min_distance_m)
                if hit is None:
                    break
                if self.gap[hit]:  # after a silence the device is where it reappears
                    anchor, anchor_xyz, cursor = hit, None, hit + 1
                    continue
                before = hit - 1
                if before >= lo and self.index[before] >= 0:
                    departure = (self.point(before), self.index[before])
                else:
                    assert state is not None
                    departure = (state.last, -1)
                moving, made = True, False
                path_offset = self.step[hit] - self.cum[hit]
                cursor = hit
            else:
                arrival = self.next_arrival[cursor]
                if arrival >= hi:
                    break
                if not short(arrival):
                    if not made:
                        events.append(MotionEvent(DEVICE_MOVING, departure[0], departure[1]))
                    events.append(MotionEvent(DEVICE_STOPPED, self.point(arrival), self.index[arrival]))
                decided = self.decided_at[arrival]
                anchor = decided if self.by_gap[arrival] else arrival
                anchor_xyz, moving, cursor = None, False, decided + 1
        last = self.point(hi - 1)
        if not moving:
            if anchor is not None:
                return MotionState(last, anchor=self.point(anchor)), events
            assert state is not None
            return MotionState(last, anchor=state.anchor), events
        if hi - cursor > _FEW:
            undecided = (np.flatnonzero(self.decision[cursor:hi] == _UNDECIDED) + cursor).tolist()
        else:
            undecided = [e for e in range(cursor, hi) if self.decisions[e] == _UNDECIDED]
        t, latitude, longitude, known = self.columns
        paths = np.where(self.is_row[undecided], known[undecided] + path_offset, known[undecided])
        pending = Pending(t[undecided], latitude[undecided], longitude[undecided], paths)
        travelled = path_offset + self.cum[hi - 1]
        start = departure[0]
        # The trip is certain once it is long enough and no arrival that would leave it short can come.
        if (
            not made
            and travelled >= trip_m
            and last.t_us - start.t_us >= trip_us
            and not any(short(e) for e in undecided)
        ):
            events.append(MotionEvent(DEVICE_MOVING, start, departure[1]))
            made = True
        return MotionState(last, departure=start, path_m=travelled, made=made, pending=pending), events

    def _leaves(
        self, anchor: int | None, anchor_xyz: tuple[float, float, float] | None, cursor: int, hi: int, distance_m: float
    ) -> int | None:
        """The first position from `cursor` that follows a silence or is `distance_m` from the anchor."""
        if cursor >= hi:
            return None
        if anchor is not None:
            a = (self.xyz[0][anchor : anchor + 1], self.xyz[1][anchor : anchor + 1], self.xyz[2][anchor : anchor + 1])
        else:
            assert anchor_xyz is not None
            a = (np.array([anchor_xyz[0]]), np.array([anchor_xyz[1]]), np.array([anchor_xyz[2]]))
        span = slice(cursor, hi)
        far = _chord_squared(a, (self.xyz[0][span], self.xyz[1][span], self.xyz[2][span])) >= _threshold(distance_m)
        hits = np.flatnonzero(self.is_row[span] & (self.gap_array[span] | far))
        return int(hits[0]) + cursor if len(hits) else None


def _decide(
    slot: Ints,
    t: Ints,
    xyz: tuple[Floats, Floats, Floats],
    gap: Bools,
    settle_us: Ints,
    threshold: Floats,
    consider: Bools,
) -> tuple[npt.NDArray[np.int8], Ints, Bools]:
    """Whether each element is an arrival, decided by the positions after it (the report's
    _arrival_possible): not one once a position is `minDistance` from it; one when a position
    `minDuration` after it is still within, or a silence follows before that; undecided while the
    batch ends first. Walks all candidates forward one position at a time, together."""
    size = len(t)
    decision = np.full(size, _UNDECIDED, dtype=np.int8)
    decided_at = np.full(size, -1, dtype=np.int64)
    by_gap = np.zeros(size, dtype=np.bool_)
    active = np.flatnonzero(consider)
    x, y, z = xyz
    offset = 1
    while active.size:
        later = active + offset
        inside = later < size
        inside[inside] = slot[later[inside]] == slot[active[inside]]
        active, later = active[inside], later[inside]
        silence = gap[later]
        decision[active[silence]] = _ARRIVAL
        decided_at[active[silence]] = later[silence]
        by_gap[active[silence]] = True
        active, later = active[~silence], later[~silence]
        chord = (x[later] - x[active]) ** 2 + (y[later] - y[active]) ** 2 + (z[later] - z[active]) ** 2
        far = chord >= threshold[slot[active]]
        decision[active[far]] = _NOT_ARRIVAL
        decided_at[active[far]] = later[far]
        active, later = active[~far], later[~far]
        settled = t[later] >= t[active] + settle_us[slot[active]]
        decision[active[settled]] = _ARRIVAL
        decided_at[active[settled]] = later[settled]
        active = active[~settled]
        offset += 1
    return decision, decided_at, by_gap


@dataclass(frozen=True)
class DetectMotion:
    """deviceMoving / deviceStopped for every device of the batch (the module's docstring): each device's
    state from its row, its valid alive positions through `advance`, the new state for its row."""

    defaults: DetectionParams
    params: Mapping[int, DetectionParams] = field(default_factory=dict)  # devices whose attributes override

    def __call__(self, batch: Batch, config: PipelineConfig) -> StepResult:
        alive = batch.alive
        alive_rows = np.flatnonzero(alive)
        if not len(alive_rows):
            return SKIP
        alive_devices = batch.device[alive_rows]
        newest = alive_rows[np.r_[alive_devices[1:] != alive_devices[:-1], True]]
        devices = batch.device[newest].tolist()
        used = np.flatnonzero(alive & batch.valid)
        slot = np.searchsorted(batch.device[newest], batch.device[used]).astype(np.int64)
        states = [self._stored(batch, d) for d in devices]
        params = [self.params.get(d, self.defaults) for d in devices]
        time_us = np.rint(batch.fix_time[used] * US_PER_S).astype(np.int64)
        new_states, found = advance(states, params, slot, time_us, batch.latitude[used], batch.longitude[used])
        kept = {device: state.to_json() for device, state in zip(devices, new_states, strict=True) if state is not None}
        rows: dict[str, list[int]] = {DEVICE_MOVING: [], DEVICE_STOPPED: []}
        details: dict[str, list[dict[str, Any]]] = {DEVICE_MOVING: [], DEVICE_STOPPED: []}
        for k, events in enumerate(found):
            for event in events:
                if event.index >= 0:
                    rows[event.type].append(int(used[event.index]))
                    details[event.type].append({})
                else:  # a position of an earlier batch: place_motion_events moves the event there
                    rows[event.type].append(int(newest[k]))
                    details[event.type].append({EVENT_AT: list(event.at)})
        return StepResult(
            motion_states=kept,
            events=tuple(
                Detected(kind, np.array(rows[kind], dtype=np.int64), None, details[kind]) for kind in MOTION_TYPES
            ),
        )

    @staticmethod
    def _stored(batch: Batch, device: int) -> MotionState | None:
        state = batch.states.get(device)
        return None if state is None else MotionState.from_json(state.motion_state)


_PG_DEVICE_ATTRIBUTES = sa.text("SELECT id, attributes FROM devices WHERE id = ANY(:ids)").bindparams(
    sa.bindparam("ids", type_=postgresql.ARRAY(sa.Integer()))
)


async def load_motion(session: AsyncSession, device_ids: Iterable[int], defaults: DetectionParams) -> DetectMotion:
    """The step for a batch of these devices: the settings' parameters (`defaults`), and those of the
    devices whose attributes override them."""
    wanted = sorted(set(device_ids))
    found: Iterable[Any]
    if dialect_name(session) == "postgresql":
        found = await session.execute(_PG_DEVICE_ATTRIBUTES, {"ids": wanted})
    else:
        found = await session.execute(
            sa.select(col(Device.id), col(Device.attributes)).where(col(Device.id).in_(wanted))
        )
    params = {
        device_id: with_attributes(defaults, attributes)[0]
        for device_id, attributes in found
        if attributes and not PARAMETER_ATTRIBUTES.keys().isdisjoint(attributes)
    }
    return DetectMotion(defaults, params)


async def place_motion_events(
    session: AsyncSession, events: list[DetectedEvent], ids: dict[tuple[int, float], int]
) -> list[DetectedEvent]:
    """The events, with each motion event found at a stand-in row moved to its own position (stored by
    an earlier batch): its time and place, and its id added to `ids`, for the store."""
    placed: list[DetectedEvent] = []
    missing: set[tuple[int, float]] = set()
    for event in events:
        at = event.attributes.get(EVENT_AT) if event.type in MOTION_TYPES else None
        if at is None:
            placed.append(event)
            continue
        t_us, latitude, longitude = at
        position = replace(
            event.position, fix_time=t_us / US_PER_S, latitude=latitude, longitude=longitude, attributes={}, id=None
        )
        rest = {key: value for key, value in event.attributes.items() if key != EVENT_AT}
        placed.append(DetectedEvent(position, event.type, event.subject, rest))
        if (position.device_id, position.fix_time) not in ids:
            missing.add((position.device_id, position.fix_time))
    if missing:
        devices = sorted({device for device, _ in missing})
        times = sorted({datetime.fromtimestamp(fix, UTC) for _, fix in missing})
        found = await session.execute(
            sa.select(col(Position.id), col(Position.device_id), col(Position.fix_time)).where(
                col(Position.device_id).in_(devices), col(Position.fix_time).in_(times)
            )
        )
        for position_id, device_id, fix_time in found:
            key = (device_id, fix_time.timestamp())
            if key in missing and position_id is not None:
                ids[key] = position_id
    return placed
