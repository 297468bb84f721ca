"""The position pipeline: an ordered list of vectorised steps over one batch's columns. Pure: numpy
in, numpy out, no I/O.

A batch (up to a few thousand positions of many devices) is sorted by device, then fix time, and held
as numpy columns with each device's stored newest position aligned to its rows (`Batch`). A step is a
function `(batch, config) -> StepResult`: it reads columns and returns the rows it drops, a mask per
named reason, and the attributes it adds, an array aligned to the rows. `run_pipeline` runs the steps
of `PIPELINE` in order and applies each result before the next step runs: dropped rows leave
`batch.kept` and are counted under the reason of the first step that dropped them; added attributes
join `batch.attributes`, where later steps read them, and end up in each stored row's `attributes`.

The order is Traccar's (ProcessingHandler): the filters invalid, zero, future, accuracy, duplicate,
implausible jump and min-period/min-distance thinning; then the speed and course a device did not
report, derived from its previous position; then distance/odometer; then motion. Positions
older than the device's newest stored one are "late": the filters judge them and they are stored, but
they move neither the odometer nor the device's state (`batch.alive` leaves them out).

Adding a step (a filter, a derived field, a detector):
1. Write `def name(batch: Batch, config: PipelineConfig) -> StepResult` (or a class with `__call__`
   when it holds data of its own, such as geofences). Work on whole columns: a device's rows are
   contiguous, `Batch.predecessor` gives each row the previous alive row of its device (or the stored
   state), and `np.maximum.accumulate`/`np.cumsum` with the device boundaries do what a per-row loop
   would. Don't write to the batch (its arrays are read-only): return drops as a boolean mask (or row
   indexes) under a reason, which becomes the key in `dropped`, and attributes as arrays aligned to
   the rows. A step that fills in a position field (`speed`, `course`) returns the whole column
   under `fields`; one that sets an attribute on some rows only returns their indexes and the value
   (one for all, or one per row) under `sparse` (left out elsewhere); a detector returns its events
   under `events`, one `Detected` per type; a detector whose state outlives the batch keeps it on the
   device row (`motion_states`), not on a position. A switch that is off returns `SKIP`.
2. Put it in `PIPELINE` where Traccar has its handler: derived speed/course after the filters and
   before distance, detectors (geofence, overspeed, ...) after motion. A step that drops goes before
   distance: a row dropped later has already moved the odometer. Whatever else a step comes to emit
   becomes one more field of `StepResult` that `run_pipeline` collects the way it collects these.
3. Test it alone on `Batch.from_rows` of a few hand-made records (tests/positions/test_pipeline_steps.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from tracker_jobs.core.config import Settings
from tracker_jobs.core.geo import haversine_m, initial_bearing_deg
from tracker_jobs.positions.record import PositionRecord

KNOTS_PER_METRE_PER_SECOND = 3600.0 / 1852.0
MAX_JUMP_ROUNDS = 50  # more implausible jumps than this for one device in one batch: drop the rest
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Column = npt.NDArray[Any]
Selection = Bools | Ints  # the rows a step drops: a mask over the batch, or row indexes
Array = TypeVar("Array", bound=npt.NDArray[Any])


@dataclass(frozen=True)
class PipelineConfig:
    filter_invalid: bool = False
    filter_zero: bool = True
    future_s: float = 86_400.0
    max_accuracy_m: float = 0.0  # 0: off
    max_speed_kn: float = 300.0  # implied speed above this is a jump; 0: off
    min_period_s: float = 0.0  # thinning; 0: off
    min_distance_m: float = 0.0  # thinning; 0: off
    motion_speed_kn: float = 0.01
    derived_min_step_m: float = 10.0  # a derived speed over a shorter step is 0: GPS jitter is no motion
    overspeed_multiplier: float = 1.0  # over the speed limit times this is overspeed
    overspeed_minimal_s: float = 0.0  # an overspeed episode makes its event once it has lasted this long
    notify_max_age_s: float = 900.0  # an older event is stored but notified to nobody
    # deviceMoving / deviceStopped follow the trips report's rule, with its settings (motion_events.py).
    report_min_distance_m: int = 200
    report_min_duration_s: int = 180
    report_stop_gap_s: int = 3600
    report_min_trip_distance_m: int | None = None
    report_min_trip_duration_s: int = 60

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        return cls(
            filter_invalid=settings.filter_invalid,
            filter_zero=settings.filter_zero,
            future_s=settings.filter_future_s,
            max_accuracy_m=settings.filter_accuracy_m,
            max_speed_kn=settings.filter_max_speed_kn,
            min_period_s=settings.filter_min_period_s,
            min_distance_m=settings.filter_min_distance_m,
            motion_speed_kn=settings.motion_speed_kn,
            derived_min_step_m=settings.derived_speed_min_step_m,
            overspeed_multiplier=settings.overspeed_multiplier,
            overspeed_minimal_s=settings.overspeed_minimal_s,
            notify_max_age_s=settings.notify_max_age_s,
            report_min_distance_m=settings.report_min_distance_m,
            report_min_duration_s=settings.report_min_duration_s,
            report_stop_gap_s=settings.report_stop_gap_s,
            report_min_trip_distance_m=settings.report_min_trip_distance_m,
            report_min_trip_duration_s=settings.report_min_trip_duration_s,
        )


@dataclass(frozen=True)
class DeviceState:
    """What the pipeline needs of a device's newest stored position."""

    fix_time: float
    latitude: float
    longitude: float
    odometer: float
    attributes: Mapping[str, Any] = field(default_factory=dict)  # the position's, for the detectors
    motion_state: Any = None  # the device row's trip detection state (motion_events.MotionState as JSON)

    @property
    def geofence_ids(self) -> tuple[int, ...]:
        """The geofences the position was inside."""
        return tuple(self.attributes.get("geofenceIds") or ())


@dataclass
class PipelineResult:
    kept: list[PositionRecord]  # to store, ordered by device then fix time
    dropped: Counter[str] = field(default_factory=Counter)
    newest: dict[int, PositionRecord] = field(default_factory=dict)  # device -> its new newest position
    events: list[DetectedEvent] = field(default_factory=list)  # at kept positions, in batch order
    motion_states: dict[int, Any] = field(default_factory=dict)  # device -> its new trip detection state


@dataclass
class Batch:
    """One batch as columns, sorted by device then fix time, so a device's rows are contiguous.

    The columns and the start state are read-only; only `run_pipeline` moves `kept` and `attributes`
    forward between steps, so a step sees exactly what the steps before it decided.
    """

    rows: list[PositionRecord]  # the positions themselves, in the columns' (sorted) order
    now: float  # epoch seconds, for the future filter
    device: Ints
    fix_time: Floats
    latitude: Floats
    longitude: Floats
    speed: Floats  # knots; NaN where the device did not report it, until `derive_speed_course`
    course: Floats  # degrees; NaN likewise
    accuracy: Floats
    valid: Bools
    # Each row's device's stored newest position (NaN: the device has none yet; odometer 0).
    start_fix_time: Floats
    start_latitude: Floats
    start_longitude: Floats
    start_odometer: Floats
    first_of_device: Ints  # index of the first row of each row's device: the group boundaries
    late: Bools  # older than the device's stored newest: stored, but moves nothing
    kept: Bools  # not dropped by any step so far
    attributes: dict[str, Column] = field(default_factory=dict)  # added by the steps so far
    sparse: dict[str, tuple[Ints, Any]] = field(default_factory=dict)  # set on some rows by the steps so far
    filled: dict[str, Bools] = field(default_factory=dict)  # per filled-in field, the rows a step changed
    events: list[Detected] = field(default_factory=list)  # found by the steps so far
    motion_states: dict[int, Any] = field(default_factory=dict)  # set by the steps so far, per device
    states: Mapping[int, DeviceState] = field(default_factory=dict)  # each device's stored newest

    @classmethod
    def from_rows(cls, rows: Sequence[PositionRecord], states: Mapping[int, DeviceState], now: float) -> Batch:
        """Sort `rows` and take their columns; `states` are the devices' newest."""
        device = _array(rows, "device_id", np.int64)
        fix = _array(rows, "fix_time", np.float64)
        order = np.lexsort((fix, device))
        sorted_rows = [rows[i] for i in order.tolist()]
        device, fix = device[order], fix[order]

        # The device's stored newest, aligned to rows: one lookup per device, then a gather.
        unique_devices, first_row = np.unique(device, return_index=True)
        known = [states.get(int(d)) for d in unique_devices]
        per_device = np.searchsorted(unique_devices, device)

        def state_column(name: str) -> Floats:
            column = np.array([np.nan if s is None else getattr(s, name) for s in known], dtype=np.float64)
            aligned: Floats = column[per_device]
            return aligned

        start_fix = state_column("fix_time")
        return cls(
            rows=sorted_rows,
            states=states,
            now=now,
            device=_frozen(device),
            fix_time=_frozen(fix),
            latitude=_frozen(_array(sorted_rows, "latitude", np.float64)),
            longitude=_frozen(_array(sorted_rows, "longitude", np.float64)),
            speed=_frozen(_optional(sorted_rows, "speed")),
            course=_frozen(_optional(sorted_rows, "course")),
            accuracy=_frozen(_array(sorted_rows, "accuracy", np.float64)),
            valid=_frozen(_array(sorted_rows, "valid", np.bool_)),
            start_fix_time=_frozen(start_fix),
            start_latitude=_frozen(state_column("latitude")),
            start_longitude=_frozen(state_column("longitude")),
            start_odometer=_frozen(np.nan_to_num(state_column("odometer"))),
            first_of_device=_frozen(first_row[per_device].astype(np.int64)),
            late=_frozen(fix < start_fix),  # NaN compares False: a new device has no late positions
            kept=_frozen(np.ones(len(sorted_rows), dtype=np.bool_)),
        )

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def alive(self) -> Bools:
        """Rows still kept that move the device forward (not late): what jumps, thinning and the
        odometer are judged on. A fresh array: a step may change its copy."""
        alive: Bools = self.kept & ~self.late
        return alive

    def predecessor(self, alive: Bools) -> tuple[Floats, Floats, Floats]:
        """Fix time, latitude and longitude of each row's previous `alive` row of the same device,
        or of the device's stored newest when there is none (NaN for a new device)."""
        previous = previous_alive(self.device, alive)
        has_row = previous >= 0
        safe = np.where(has_row, previous, 0)
        return (
            np.where(has_row, self.fix_time[safe], self.start_fix_time),
            np.where(has_row, self.latitude[safe], self.start_latitude),
            np.where(has_row, self.longitude[safe], self.start_longitude),
        )


@dataclass(frozen=True)
class StepResult:
    """What a step decided: rows to drop by reason, attributes to add, position fields it filled in
    (each a whole column) and attributes set to true on some rows only (arrays aligned to the rows)."""

    drops: Mapping[str, Selection] = field(default_factory=dict)
    attributes: Mapping[str, Column] = field(default_factory=dict)
    fields: Mapping[str, Floats] = field(default_factory=dict)  # one of FILLABLE
    sparse: Mapping[str, tuple[Ints, Any]] = field(default_factory=dict)  # rows, one value or one per row
    events: Sequence[Detected] = ()
    motion_states: Mapping[int, Any] = field(default_factory=dict)  # device -> state for its row (JSON)


@dataclass(frozen=True)
class Detected:
    """Events of one type a step found: one at each of `rows`, about `subject` (a geofence's id, say;
    0 when it is about nothing but the device)."""

    type: str
    rows: Ints
    subject: Ints | None = None
    attributes: Sequence[dict[str, Any]] | None = None  # one per event


@dataclass(frozen=True)
class DetectedEvent:
    position: PositionRecord
    type: str
    subject: int
    attributes: dict[str, Any] = field(default_factory=dict)


FILLABLE = ("speed", "course")  # the position fields a step may fill in


SKIP = StepResult()  # a step whose switch is off


class Step(Protocol):
    """One stage of the pipeline; plain functions with this signature are steps."""

    def __call__(self, batch: Batch, config: PipelineConfig, /) -> StepResult: ...


def drop_invalid(batch: Batch, config: PipelineConfig) -> StepResult:
    """Positions the device itself marks invalid (no fix), when that filter is on."""
    if not config.filter_invalid:
        return SKIP
    return StepResult(drops={"invalid": ~batch.valid})


def drop_zero(batch: Batch, config: PipelineConfig) -> StepResult:
    """Null island: latitude and longitude both exactly zero, what a tracker without a fix sends."""
    if not config.filter_zero:
        return SKIP
    return StepResult(drops={"zero": (batch.latitude == 0.0) & (batch.longitude == 0.0)})


def drop_future(batch: Batch, config: PipelineConfig) -> StepResult:
    """Fix times further ahead of the server's clock than `future_s`: a wrong device clock."""
    return StepResult(drops={"future": batch.fix_time > batch.now + config.future_s})


def drop_inaccurate(batch: Batch, config: PipelineConfig) -> StepResult:
    """Positions whose reported accuracy is worse than `max_accuracy_m`, when that filter is on."""
    if config.max_accuracy_m <= 0:
        return SKIP
    return StepResult(drops={"accuracy": batch.accuracy > config.max_accuracy_m})


def drop_duplicate(batch: Batch, config: PipelineConfig) -> StepResult:
    """A second position with the same fix time, within the batch or the one already stored.
    Rows are sorted, so a repeat is always next to the row it repeats."""
    repeated = np.zeros(len(batch), dtype=np.bool_)
    device, fix = batch.device, batch.fix_time
    repeated[1:] = (device[1:] == device[:-1]) & (fix[1:] == fix[:-1])
    return StepResult(drops={"duplicate": repeated | (fix == batch.start_fix_time)})


def drop_jump(batch: Batch, config: PipelineConfig) -> StepResult:
    """Implausible jumps: the speed implied by the distance from the previous good position is above
    `max_speed_kn`. Only a device's first jump is sure to be one (the rows after it were measured against
    it), so each round drops the first jump of every device at once and judges the rest again; a glitch
    costs one round, not one pass per row."""
    if config.max_speed_kn <= 0:
        return SKIP
    alive = batch.alive
    jumped = np.zeros(len(batch), dtype=np.bool_)
    for _ in range(MAX_JUMP_ROUNDS):
        prev_fix, prev_lat, prev_lon = batch.predecessor(alive)
        gap_s = batch.fix_time - prev_fix
        metres = np.nan_to_num(haversine_m(prev_lat, prev_lon, batch.latitude, batch.longitude))
        with np.errstate(divide="ignore", invalid="ignore"):
            implied_kn = np.where(gap_s > 0, metres / gap_s * KNOTS_PER_METRE_PER_SECOND, 0.0)
        jumps = alive & (implied_kn > config.max_speed_kn)
        if not jumps.any():
            break
        jump_rows = np.flatnonzero(jumps)
        first_per_device = jump_rows[np.unique(batch.device[jump_rows], return_index=True)[1]]
        jumped[first_per_device] = True
        alive[first_per_device] = False
    else:
        # Out of rounds: every row still judged a jump goes, without another look.
        jumped |= alive & (implied_kn > config.max_speed_kn)
    return StepResult(drops={"jump": jumped})


def thin(batch: Batch, config: PipelineConfig) -> StepResult:
    """Optional thinning: keep a position only once `min_period_s` has passed and it is `min_distance_m`
    from the last kept one. Greedy by nature (whether a row stays depends on which rows before it
    stayed), so it walks the alive rows: the one per-row loop, and it is off by default."""
    if config.min_period_s <= 0 and config.min_distance_m <= 0:
        return SKIP
    device, fix, lat, lon = batch.device, batch.fix_time, batch.latitude, batch.longitude
    thinned = np.zeros(len(batch), dtype=np.bool_)
    last_device, last_fix, last_lat, last_lon = -1, np.nan, np.nan, np.nan
    for i in np.flatnonzero(batch.alive).tolist():
        if device[i] != last_device:
            last_device = int(device[i])
            last_fix, last_lat, last_lon = batch.start_fix_time[i], batch.start_latitude[i], batch.start_longitude[i]
        if not np.isnan(last_fix):
            too_soon = config.min_period_s > 0 and fix[i] - last_fix < config.min_period_s
            too_close = (
                config.min_distance_m > 0
                and haversine_m(np.array([last_lat]), np.array([last_lon]), lat[i : i + 1], lon[i : i + 1])[0]
                < config.min_distance_m
            )
            if too_soon or too_close:
                thinned[i] = True
                continue
        last_fix, last_lat, last_lon = fix[i], lat[i], lon[i]
    return StepResult(drops={"thinned": thinned})


def derive_speed_course(batch: Batch, config: PipelineConfig) -> StepResult:
    """The speed and course a device did not report, from its previous position: distance over time
    (knots) and the initial bearing towards this one. A device's first position ever, one at the same
    time as the one before it, and one less than `derived_min_step_m` from it (a parked device's GPS
    jitter) gets 0. Positions marked `speedComputed` / `courseComputed` had theirs derived; a reported
    speed or course (0 included) is kept."""
    missing_speed, missing_course = np.isnan(batch.speed), np.isnan(batch.course)
    if not (missing_speed.any() or missing_course.any()):
        return SKIP
    # A late position follows the kept position before it; the others the previous alive one (or
    # the stored newest), as the odometer does.
    alive_fix, alive_lat, alive_lon = batch.predecessor(batch.alive)
    kept_fix, kept_lat, kept_lon = batch.predecessor(batch.kept)
    late = batch.late
    prev_fix = np.where(late, kept_fix, alive_fix)
    prev_lat, prev_lon = np.where(late, kept_lat, alive_lat), np.where(late, kept_lon, alive_lon)
    if late.any():
        # A late row's "kept predecessor" may be the stored newest, which is after it: not a predecessor.
        prev_fix = np.where(late & (prev_fix >= batch.fix_time), np.nan, prev_fix)
    gap_s = batch.fix_time - prev_fix
    metres = haversine_m(prev_lat, prev_lon, batch.latitude, batch.longitude)
    moved = (gap_s > 0) & (metres >= max(config.derived_min_step_m, 1e-9))  # False where NaN: no predecessor
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = np.where(moved, metres / gap_s * KNOTS_PER_METRE_PER_SECOND, 0.0)
    course = np.where(moved, initial_bearing_deg(prev_lat, prev_lon, batch.latitude, batch.longitude), 0.0)
    return StepResult(
        fields={
            "speed": np.where(missing_speed, speed, batch.speed),
            "course": np.where(missing_course, course, batch.course),
        },
        sparse={
            "speedComputed": (np.flatnonzero(missing_speed), True),
            "courseComputed": (np.flatnonzero(missing_course), True),
        },
    )


def add_distance(batch: Batch, config: PipelineConfig) -> StepResult:
    """`distance` from the previous alive position (0 for late ones and a device's first ever) and
    `totalDistance`: the device's stored odometer plus the distance run so far in this batch."""
    alive = batch.alive
    _, prev_lat, prev_lon = batch.predecessor(alive)
    distance = np.where(alive, np.nan_to_num(haversine_m(prev_lat, prev_lon, batch.latitude, batch.longitude)), 0.0)
    # One running sum over the batch; subtracting what it held before a device's first row restarts it per device.
    cumulative = np.cumsum(distance)
    device_start = np.concatenate(([0.0], cumulative))[batch.first_of_device]
    odometer = batch.start_odometer + cumulative - device_start
    return StepResult(attributes={"distance": distance, "totalDistance": odometer})


def add_motion(batch: Batch, config: PipelineConfig) -> StepResult:
    """`motion`: the speed (reported or derived) is above `motion_speed_kn`."""
    return StepResult(attributes={"motion": batch.speed > config.motion_speed_kn})


PIPELINE: tuple[Step, ...] = (
    drop_invalid,
    drop_zero,
    drop_future,
    drop_inaccurate,
    drop_duplicate,
    drop_jump,
    thin,
    derive_speed_course,
    add_distance,
    add_motion,
)


def run_pipeline(
    rows: list[PositionRecord],
    states: dict[int, DeviceState],
    config: PipelineConfig,
    now: float,
    *,
    steps: Sequence[Step] = PIPELINE,
) -> PipelineResult:
    """Filter and enrich one batch; `states` are the devices' newest. The kept rows come back sorted,
    each with the attributes the steps added merged into its own."""
    if not rows:
        return PipelineResult(kept=[])
    batch = Batch.from_rows(rows, states, now)
    dropped: Counter[str] = Counter()
    for step in steps:
        _apply(batch, step(batch, config), dropped, step)

    kept = np.flatnonzero(batch.kept)
    result = PipelineResult(
        kept=[batch.rows[i] for i in kept.tolist()], dropped=dropped, motion_states=batch.motion_states
    )
    if batch.attributes:
        names = list(batch.attributes)
        # Column by column to Python values, then one dict per kept row (the row loop is unavoidable:
        # attributes are dicts), so the loop body stays small.
        values = zip(*(_json_values(batch.attributes[name][kept]) for name in names), strict=True)
        for row, added in zip(result.kept, values, strict=True):
            attributes = row.attributes.copy()  # a new dict: the one the row came with may be shared
            attributes.update(zip(names, added, strict=True))
            row.attributes = attributes
    _write_back(batch, kept, result.kept)
    alive = np.flatnonzero(batch.alive)
    if len(alive):
        last_of_device = alive[np.r_[batch.device[alive][1:] != batch.device[alive][:-1], True]]
        for i in last_of_device.tolist():
            result.newest[int(batch.device[i])] = batch.rows[i]
    for detected in batch.events:
        subjects = np.zeros(len(detected.rows), dtype=np.int64) if detected.subject is None else detected.subject
        details = detected.attributes or [{}] * len(detected.rows)
        for row, subject, more in zip(detected.rows.tolist(), subjects.tolist(), details, strict=True):
            if batch.kept[row]:
                result.events.append(DetectedEvent(batch.rows[row], detected.type, subject, more))
    return result


def _write_back(batch: Batch, kept: Ints, records: list[PositionRecord]) -> None:
    """Put the filled-in fields and the marks into the kept records: only the rows they touch."""
    for name, changed in batch.filled.items():
        column: Floats = getattr(batch, name)
        rows = np.flatnonzero(changed[kept])
        for i, value in zip(rows.tolist(), np.nan_to_num(column[kept[rows]]).tolist(), strict=True):
            setattr(records[i], name, value)
    position = np.full(len(batch), -1, dtype=np.int64)  # a batch row's index among the kept records
    position[kept] = np.arange(len(kept))
    for name, (rows, values) in batch.sparse.items():
        per_row = values if isinstance(values, list) else [values] * len(rows)
        for index, value in zip(position[rows].tolist(), per_row, strict=True):
            if index >= 0:
                records[index].attributes = {**records[index].attributes, name: value}


def _apply(batch: Batch, result: StepResult, dropped: Counter[str], step: Step) -> None:
    """Narrow `kept` by the step's drops (a row counts under the first reason that drops it) and
    record its attributes, fields and marks, so the next step sees them."""
    size = len(batch)
    for reason, selection in result.drops.items():
        mask = _mask(selection, size)
        if mask.shape != (size,):
            raise ValueError(f"{_name(step)}: drops {reason!r} has shape {mask.shape}, not ({size},)")
        newly = int(np.count_nonzero(batch.kept & mask))
        if newly:
            dropped[reason] += newly
            batch.kept = _frozen(batch.kept & ~mask)
    for name, column in result.attributes.items():
        if column.shape != (size,):
            raise ValueError(f"{_name(step)}: attribute {name!r} has shape {column.shape}, not ({size},)")
        batch.attributes[name] = _frozen(column)
    for name, values in result.fields.items():
        if name not in FILLABLE or values.shape != (size,):
            raise ValueError(f"{_name(step)}: field {name!r} is not one of {FILLABLE} as a ({size},) column")
        old: Floats = getattr(batch, name)
        changed = ~((values == old) | (np.isnan(values) & np.isnan(old)))
        batch.filled[name] = batch.filled.get(name, np.zeros(size, dtype=np.bool_)) | changed
        setattr(batch, name, _frozen(values.astype(np.float64)))
    for name, (rows, values) in result.sparse.items():
        if isinstance(values, list) and len(values) != len(rows):
            raise ValueError(f"{_name(step)}: {name!r} has {len(values)} values for {len(rows)} rows")
        batch.sparse[name] = (rows, values)
    batch.events.extend(detected for detected in result.events if len(detected.rows))
    batch.motion_states.update(result.motion_states)


def _name(step: Step) -> str:
    return str(getattr(step, "__name__", step))


def _mask(selection: Selection, size: int) -> Bools:
    if selection.dtype == np.bool_:
        return selection.astype(np.bool_, copy=False)  # the mask itself: no copy
    mask = np.zeros(size, dtype=np.bool_)
    mask[selection] = True
    return mask


def _json_values(column: Column) -> list[Any]:
    """Python values for a row's attributes: floats to two decimals (centimetres for distances)."""
    values: list[Any] = column.tolist()
    if column.dtype.kind == "f":
        return [round(value, 2) for value in values]
    return values


def _frozen(array: Array) -> Array:
    """Make an array read-only, so a step that writes to the batch fails at once instead of
    changing what the steps after it see."""
    array.flags.writeable = False
    return array


def _array(rows: Sequence[PositionRecord], name: str, dtype: Any) -> Any:
    return np.fromiter(map(attrgetter(name), rows), dtype=dtype, count=len(rows))


def _optional(rows: Sequence[PositionRecord], name: str) -> Floats:
    """A field the device may not have reported: NaN where it is None."""
    values = (np.nan if value is None else value for value in map(attrgetter(name), rows))
    return np.fromiter(values, dtype=np.float64, count=len(rows))


def previous_alive(device: Ints, alive: Bools) -> Ints:
    """For each row, the index of the previous alive row of the same device, or -1."""
    index = np.where(alive, np.arange(len(device)), -1)
    # The last alive index strictly before each row, then only if it is the same device.
    running = np.maximum.accumulate(index)
    previous = np.concatenate(([-1], running[:-1])).astype(np.int64)
    same_device = previous >= 0
    same_device[same_device] = device[previous[same_device]] == device[same_device]
    return np.where(same_device, previous, -1)
