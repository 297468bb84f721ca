"""The position pipeline: ordered steps over a whole batch at once, each able to drop a position
with a named reason, then distance, odometer and motion. Pure: numpy in, numpy out, no I/O.

Steps, in Traccar's order (ProcessingHandler): invalid, zero, future, accuracy, duplicate,
implausible jump, min-period/min-distance thinning; then distance/odometer and motion. Positions
older than the device's newest are "late": stored, but they move neither the odometer nor the state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tracker_jobs.core.config import Settings
from tracker_jobs.core.geo import haversine_m

KNOTS_PER_METRE_PER_SECOND = 3600.0 / 1852.0
MAX_JUMP_ROUNDS = 50  # more implausible jumps than this for one device in one batch: drop the rest
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


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
        )


@dataclass(frozen=True)
class DeviceState:
    """What the pipeline needs of a device's newest stored position."""

    fix_time: float
    latitude: float
    longitude: float
    odometer: float


@dataclass
class PipelineResult:
    kept: list[dict[str, Any]]  # rows to store, ordered by device then fix time
    dropped: Counter[str] = field(default_factory=Counter)
    newest: dict[int, dict[str, Any]] = field(default_factory=dict)  # device -> its new newest row


def _array(rows: list[dict[str, Any]], key: str, dtype: Any) -> Any:
    return np.fromiter((row[key] for row in rows), dtype=dtype, count=len(rows))


def _previous_alive(device: Ints, alive: Bools) -> Ints:
    """For each row, the index of the previous alive row of the same device, or -1."""
    index = np.where(alive, np.arange(len(device)), -1)
    # The last alive index strictly before each row, then only if it is the same device.
    running = np.maximum.accumulate(index)
    previous = np.concatenate(([-1], running[:-1])).astype(np.int64)
    same_device = previous >= 0
    same_device[same_device] = device[previous[same_device]] == device[same_device]
    return np.where(same_device, previous, -1)


def run_pipeline(
    rows: list[dict[str, Any]], states: dict[int, DeviceState], config: PipelineConfig, now: float
) -> PipelineResult:
    """Filter and enrich one batch. `rows` carry epoch-second `fix_time`; `states` the devices' newest."""
    if not rows:
        return PipelineResult(kept=[])
    device = _array(rows, "device_id", np.int64)
    fix = _array(rows, "fix_time", np.float64)
    order = np.lexsort((fix, device))
    rows = [rows[i] for i in order]
    device, fix = device[order], fix[order]
    lat, lon = _array(rows, "latitude", np.float64), _array(rows, "longitude", np.float64)
    speed, accuracy = _array(rows, "speed", np.float64), _array(rows, "accuracy", np.float64)
    valid = _array(rows, "valid", np.bool_)

    # The device's stored newest, aligned to rows (NaN: the device has none yet).
    unique_devices, first_row = np.unique(device, return_index=True)
    known = [states.get(int(d)) for d in unique_devices]
    per_device = np.searchsorted(unique_devices, device)

    def state_column(name: str) -> Floats:
        column = np.array([np.nan if s is None else getattr(s, name) for s in known], dtype=np.float64)
        aligned: Floats = column[per_device]
        return aligned

    state_fix, state_lat, state_lon = state_column("fix_time"), state_column("latitude"), state_column("longitude")
    state_odometer = np.nan_to_num(state_column("odometer"))

    reason = np.full(len(rows), "", dtype=object)

    def drop(mask: Bools, name: str) -> None:
        reason[(reason == "") & mask] = name

    if config.filter_invalid:
        drop(~valid, "invalid")
    if config.filter_zero:
        drop((lat == 0.0) & (lon == 0.0), "zero")
    drop(fix > now + config.future_s, "future")
    if config.max_accuracy_m > 0:
        drop(accuracy > config.max_accuracy_m, "accuracy")
    repeated = np.zeros(len(rows), dtype=np.bool_)
    repeated[1:] = (device[1:] == device[:-1]) & (fix[1:] == fix[:-1])
    drop(repeated | (fix == state_fix), "duplicate")

    late = fix < state_fix  # NaN compares False: a new device has no late positions
    alive = (reason == "") & ~late

    def predecessor(alive_now: Bools) -> tuple[Ints, Floats, Floats, Floats]:
        previous = _previous_alive(device, alive_now)
        has_row = previous >= 0
        safe = np.where(has_row, previous, 0)
        prev_fix = np.where(has_row, fix[safe], state_fix)
        prev_lat = np.where(has_row, lat[safe], state_lat)
        prev_lon = np.where(has_row, lon[safe], state_lon)
        return previous, prev_fix, prev_lat, prev_lon

    if config.max_speed_kn > 0:
        for _ in range(MAX_JUMP_ROUNDS):
            _, prev_fix, prev_lat, prev_lon = predecessor(alive)
            gap_s = fix - prev_fix
            metres = np.nan_to_num(haversine_m(prev_lat, prev_lon, lat, lon))
            with np.errstate(divide="ignore", invalid="ignore"):
                implied_kn = np.where(gap_s > 0, metres / gap_s * KNOTS_PER_METRE_PER_SECOND, 0.0)
            jumps = alive & (implied_kn > config.max_speed_kn)
            if not jumps.any():
                break
            # Only each device's first jump: the rows after it are judged against the last good one.
            jump_rows = np.flatnonzero(jumps)
            first_per_device = jump_rows[np.unique(device[jump_rows], return_index=True)[1]]
            reason[first_per_device] = "jump"
            alive[first_per_device] = False
        else:
            reason[alive & (implied_kn > config.max_speed_kn)] = "jump"
            alive &= reason == ""

    if config.min_period_s > 0 or config.min_distance_m > 0:
        _thin(device, fix, lat, lon, alive, reason, state_fix, state_lat, state_lon, config)

    _, prev_fix, prev_lat, prev_lon = predecessor(alive)
    distance = np.where(alive, np.nan_to_num(haversine_m(prev_lat, prev_lon, lat, lon)), 0.0)
    # Odometer: the device's stored one plus the distance run so far in this batch.
    cumulative = np.cumsum(distance)
    device_start = np.concatenate(([0.0], cumulative))[first_row][per_device]
    odometer = state_odometer + cumulative - device_start
    motion = speed > config.motion_speed_kn

    result = PipelineResult(kept=[], dropped=Counter(str(r) for r in reason[reason != ""]))
    kept = np.flatnonzero(reason == "")
    for i in kept.tolist():
        row = rows[i]
        row["attributes"] = {
            **row["attributes"],
            "distance": round(float(distance[i]), 2),
            "totalDistance": round(float(odometer[i]), 2),
            "motion": bool(motion[i]),
        }
        result.kept.append(row)
    newest_alive = np.flatnonzero(alive)
    if len(newest_alive):
        last_of_device = newest_alive[np.r_[device[newest_alive][1:] != device[newest_alive][:-1], True]]
        for i in last_of_device.tolist():
            result.newest[int(device[i])] = rows[i]
    return result


def _thin(
    device: Ints,
    fix: Floats,
    lat: Floats,
    lon: Floats,
    alive: Bools,
    reason: Any,
    state_fix: Floats,
    state_lat: Floats,
    state_lon: Floats,
    config: PipelineConfig,
) -> None:
    """Optional thinning: keep a position only once min_period_s has passed and it is min_distance_m
    from the last kept one. Greedy by nature, so it walks the alive rows (it is off by default)."""
    last_device, last_fix, last_lat, last_lon = -1, np.nan, np.nan, np.nan
    for i in np.flatnonzero(alive).tolist():
        if device[i] != last_device:
            last_device, last_fix, last_lat, last_lon = int(device[i]), state_fix[i], state_lat[i], state_lon[i]
        if not np.isnan(last_fix):
            too_soon = config.min_period_s > 0 and fix[i] - last_fix < config.min_period_s
            too_close = (
                config.min_distance_m > 0
                and haversine_m(np.array([last_lat]), np.array([last_lon]), lat[i : i + 1], lon[i : i + 1])[0]
                < config.min_distance_m
            )
            if too_soon or too_close:
                reason[i] = "thinned"
                alive[i] = False
                continue
        last_fix, last_lat, last_lon = fix[i], lat[i], lon[i]
