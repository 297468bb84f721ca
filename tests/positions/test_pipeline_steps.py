"""The pipeline's steps one at a time, on small hand-made batches; the order of PIPELINE; a made-up
step appended to it. The whole pipeline's behaviour is in test_pipeline.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from tracker_jobs.core.geo import haversine_m
from tracker_jobs.positions.pipeline import (
    KNOTS_PER_METRE_PER_SECOND,
    PIPELINE,
    SKIP,
    Batch,
    DeviceState,
    PipelineConfig,
    Step,
    StepResult,
    add_distance,
    add_motion,
    derive_speed_course,
    drop_duplicate,
    drop_future,
    drop_inaccurate,
    drop_invalid,
    drop_jump,
    drop_zero,
    run_pipeline,
    thin,
)
from tracker_jobs.positions.record import PositionRecord

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STEP_M = 111.32  # 0.001 degree of latitude with Traccar's radius
GLITCH = 1.0  # degrees of latitude: ~111 km, a jump at any plausible speed


def row(
    device: int, t: float, lat: float = 10.0, lon: float = 20.0, speed: float | None = 0.0, course: float | None = 0.0
) -> PositionRecord:
    # fix_time: seconds before NOW, so the tests read as a timeline
    return PositionRecord(
        device_id=device, fix_time=NOW - t, latitude=lat, longitude=lon, speed=speed, course=course, accuracy=5.0
    )


def state(t: float, lat: float = 10.0, lon: float = 20.0, odometer: float = 0.0) -> DeviceState:
    return DeviceState(fix_time=NOW - t, latitude=lat, longitude=lon, odometer=odometer)


def batch(rows: list[PositionRecord], states: dict[int, DeviceState] | None = None) -> Batch:
    return Batch.from_rows(rows, states or {}, NOW)


def without(b: Batch, *dropped: int) -> Batch:
    """The batch as a later step sees it once an earlier step dropped these rows."""
    kept = np.ones(len(b), dtype=np.bool_)
    kept[list(dropped)] = False
    return dataclasses.replace(b, kept=kept)


def drops(result: StepResult, reason: str) -> list[int]:
    return np.flatnonzero(result.drops[reason]).tolist()


def test_pipeline_runs_in_traccars_order() -> None:
    # Traccar's ProcessingHandler: FilterHandler (invalid, zero, future, accuracy, duplicate, max speed,
    # min period/distance), then DistanceHandler, then MotionHandler, as the module docstring says.
    documented = (
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
    assert documented == PIPELINE


def test_batch_is_sorted_by_device_then_time_with_the_stored_state_beside_each_row() -> None:
    b = batch([row(2, 10), row(1, 20), row(1, 30)], {1: state(100, odometer=7.0)})
    assert b.device.tolist() == [1, 1, 2]
    assert (NOW - b.fix_time).tolist() == [30, 20, 10]
    assert b.first_of_device.tolist() == [0, 0, 2]
    assert b.start_odometer.tolist() == [7.0, 7.0, 0.0]
    assert np.isnan(b.start_fix_time[2])  # device 2 has nothing stored
    assert b.kept.all()
    assert not b.late.any()


# --- the filters that look at one row at a time ---


@pytest.mark.parametrize(
    ("step", "bad", "config", "reason"),
    [
        (drop_invalid, {"valid": False}, PipelineConfig(filter_invalid=True), "invalid"),
        (drop_zero, {"latitude": 0.0, "longitude": 0.0}, PipelineConfig(), "zero"),
        (drop_future, {"fix_time": NOW + 2 * 86_400}, PipelineConfig(), "future"),
        (drop_inaccurate, {"accuracy": 500.0}, PipelineConfig(max_accuracy_m=100), "accuracy"),
    ],
)
def test_a_row_filter_alone(step: Step, bad: dict[str, Any], config: PipelineConfig, reason: str) -> None:
    b = batch([row(1, 30), row(1, 20), dataclasses.replace(row(1, 10), **bad)])
    assert drops(step(b, config), reason) == [2]


def test_switched_off_filters_skip() -> None:
    b = batch([row(1, 10)])
    config = PipelineConfig(filter_zero=False, max_speed_kn=0)
    assert [step(b, config) for step in (drop_invalid, drop_zero, drop_inaccurate, drop_jump, thin)] == [SKIP] * 5


def test_duplicates_within_the_batch_and_of_the_stored_state() -> None:
    b = batch([row(1, 20), row(1, 20), row(2, 20), row(3, 50)], {3: state(50)})
    assert drops(drop_duplicate(b, PipelineConfig()), "duplicate") == [1, 3]


# --- implausible jumps ---


def test_jump_drops_each_devices_glitch_and_judges_the_rest_against_the_last_good_row() -> None:
    rows = [row(1, 40), row(1, 30, lat=10 + GLITCH), row(1, 20, lat=10.001)]
    rows += [row(2, 40), row(2, 30, lat=10.001), row(2, 20, lat=10 - GLITCH), row(2, 10, lat=10 - GLITCH)]
    result = drop_jump(batch(rows), PipelineConfig(max_speed_kn=100))
    # Device 2's two rows far south: both are jumps from the last good row, though not from each other.
    assert drops(result, "jump") == [1, 5, 6]


def test_jump_is_judged_from_the_stored_state_and_late_rows_are_not_judged() -> None:
    b = batch([row(1, 200, lat=10 + GLITCH), row(1, 50, lat=10 + GLITCH), row(1, 40)], {1: state(100)})
    assert b.late.tolist() == [True, False, False]
    assert drops(drop_jump(b, PipelineConfig()), "jump") == [1]


def test_jump_ignores_rows_an_earlier_step_dropped() -> None:
    # Row 1 is far away, but an earlier filter dropped it: row 2 is judged against row 0, so stays.
    b = without(batch([row(1, 30), row(1, 20, lat=10 + GLITCH), row(1, 10, lat=10.001)]), 1)
    assert drops(drop_jump(b, PipelineConfig(max_speed_kn=100)), "jump") == []


def jumps_by_loop(b: Batch, max_speed_kn: float) -> list[int]:
    """The jump filter written straightforwardly: walk each device's alive rows, remembering the last good one."""
    jumped = []
    last: tuple[float, float, float] | None = None
    for i in range(len(b)):
        if i == 0 or b.device[i] != b.device[i - 1]:
            start = (b.start_fix_time[i], b.start_latitude[i], b.start_longitude[i])
            last = None if np.isnan(start[0]) else start
        if not b.kept[i] or b.late[i]:
            continue
        if last is not None:
            gap_s = b.fix_time[i] - last[0]
            metres = haversine_m(
                np.array([last[1]]), np.array([last[2]]), b.latitude[i : i + 1], b.longitude[i : i + 1]
            )
            if gap_s > 0 and metres[0] / gap_s * KNOTS_PER_METRE_PER_SECOND > max_speed_kn:
                jumped.append(i)
                continue
        last = (b.fix_time[i], b.latitude[i], b.longitude[i])
    return jumped


@pytest.mark.parametrize("seed", range(20))
def test_jump_agrees_with_a_loop_on_random_tracks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for device in range(8):
        lat = 10.0 + device
        for k in range(int(rng.integers(1, 40))):
            lat += float(rng.normal(0, 0.0005))
            glitch = GLITCH * float(rng.choice([-1, 1])) if rng.random() < 0.15 else 0.0
            rows.append(row(device, 1000 - 10 * k, lat=lat + glitch))
    states = {d: state(float(rng.uniform(500, 1100)), lat=10.0 + d) for d in range(0, 8, 2)}
    b = batch(rows, states)
    b = without(b, *rng.choice(len(b), size=len(b) // 10, replace=False).tolist())
    assert drops(drop_jump(b, PipelineConfig(max_speed_kn=100)), "jump") == jumps_by_loop(b, 100)


# --- thinning ---


def test_thinning_by_period_restarts_for_each_device_and_counts_from_the_stored_state() -> None:
    rows = [row(1, 100 - s) for s in range(0, 12, 2)] + [row(2, 100 - s) for s in range(0, 12, 2)]
    b = batch(rows, {2: state(103)})
    # Device 1 keeps 100 and 94 s before now; device 2's stored newest is at 103, so it keeps 98 and 92.
    assert drops(thin(b, PipelineConfig(min_period_s=5)), "thinned") == [1, 2, 4, 5, 6, 8, 9, 11]


def test_thinning_by_distance_keeps_what_has_moved_far_enough_from_the_last_kept() -> None:
    b = batch([row(1, 50 - s, lat=10 + s * 0.0002) for s in range(8)])  # ~22 m apart
    assert drops(thin(b, PipelineConfig(min_distance_m=50)), "thinned") == [1, 2, 4, 5, 7]


def test_thinning_leaves_late_rows_and_dropped_rows_alone() -> None:
    b = without(batch([row(1, 300), row(1, 50), row(1, 49), row(1, 48)], {1: state(100)}), 2)
    assert drops(thin(b, PipelineConfig(min_period_s=10)), "thinned") == [3]


# --- distance, odometer, motion ---


def test_distance_and_odometer_per_device_from_the_stored_state() -> None:
    rows = [row(1, 30), row(1, 20, lat=10.001), row(1, 10, lat=10.003)]
    rows += [row(2, 30, lat=11.0), row(2, 20, lat=11.001)]
    result = add_distance(batch(rows, {1: state(40, lat=10.001, odometer=1000.0)}), PipelineConfig())
    assert result.attributes["distance"] == pytest.approx([STEP_M, STEP_M, 2 * STEP_M, 0.0, STEP_M], rel=1e-3)
    odometer = [1000 + STEP_M, 1000 + 2 * STEP_M, 1000 + 4 * STEP_M, 0.0, STEP_M]
    assert result.attributes["totalDistance"] == pytest.approx(odometer, rel=1e-3)


def test_distance_skips_late_and_dropped_rows() -> None:
    rows = [row(1, 300, lat=12.0), row(1, 30, lat=10.001), row(1, 20, lat=11.0), row(1, 10, lat=10.002)]
    b = without(batch(rows, {1: state(100, odometer=500.0)}), 2)
    result = add_distance(b, PipelineConfig())
    # Late row 0 moves nothing; row 3 is measured from row 1, past the dropped row 2.
    assert result.attributes["distance"] == pytest.approx([0.0, STEP_M, 0.0, STEP_M], rel=1e-3)
    assert result.attributes["totalDistance"] == pytest.approx(
        [500.0, 500 + STEP_M, 500 + STEP_M, 500 + 2 * STEP_M], rel=1e-3
    )


def test_motion_is_speed_above_the_threshold() -> None:
    b = batch([row(1, 30, speed=0.0), row(1, 20, speed=0.5), row(1, 10, speed=12.0)])
    assert add_motion(b, PipelineConfig(motion_speed_kn=1.0)).attributes["motion"].tolist() == [False, False, True]


# --- the extension point ---


def drop_slow(batch: Batch, config: PipelineConfig) -> StepResult:
    """A made-up filter: drops by row indexes rather than a mask."""
    return StepResult(drops={"slow": np.flatnonzero(batch.speed < 1.0)})


def flag_long_hops(batch: Batch, config: PipelineConfig) -> StepResult:
    """A made-up detector: reads what an earlier step added."""
    return StepResult(attributes={"longHop": batch.attributes["distance"] > 150.0})


def test_an_appended_step_runs_and_its_drops_are_counted_under_its_name() -> None:
    rows = [
        row(1, 40, speed=5.0),
        row(1, 30, lat=0.0, lon=0.0, speed=0.0),  # zero and slow: counted once, as zero, the earlier step
        row(1, 20, lat=10.001, speed=0.0),
        row(1, 10, lat=10.003, speed=5.0),
    ]
    result = run_pipeline(rows, {}, PipelineConfig(), NOW, steps=(*PIPELINE, drop_slow, flag_long_hops))
    assert result.dropped == {"zero": 1, "slow": 1}
    assert [r.fix_time for r in result.kept] == [NOW - 40, NOW - 10]
    assert [r.attributes["longHop"] for r in result.kept] == [False, True]
    assert list(result.kept[1].attributes) == ["distance", "totalDistance", "motion", "longHop"]


def test_a_step_cannot_write_to_the_batch() -> None:
    def overwrite(batch: Batch, config: PipelineConfig) -> StepResult:
        batch.speed[:] = 0.0
        return SKIP

    with pytest.raises(ValueError, match="read-only"):
        run_pipeline([row(1, 10)], {}, PipelineConfig(), NOW, steps=(overwrite,))


def test_a_step_must_return_one_value_per_row() -> None:
    def short(batch: Batch, config: PipelineConfig) -> StepResult:
        return StepResult(attributes={"oops": np.zeros(len(batch) - 1)})

    with pytest.raises(ValueError, match=r"short.*'oops'"):
        run_pipeline([row(1, 20), row(1, 10)], {}, PipelineConfig(), NOW, steps=(short,))


# --- speed and course the device did not report ---


def test_speed_and_course_are_derived_from_the_previous_position_when_not_reported() -> None:
    # Device 1 heads north 0.001 degree (111.32 m) every 10 s; device 2 east, from its stored state.
    rows = [row(1, 30, speed=None, course=None), row(1, 20, lat=10.001, speed=None, course=None)]
    rows += [row(1, 10, lat=10.002, speed=None, course=None), row(2, 10, lon=20.001, speed=None, course=None)]
    result = derive_speed_course(batch(rows, {2: state(20)}), PipelineConfig())
    north_kn = STEP_M / 10 * 3600 / 1852
    east_kn = (
        haversine_m(np.array([10.0]), np.array([20.0]), np.array([10.0]), np.array([20.001]))[0] / 10 * 3600 / 1852
    )
    assert result.fields["speed"] == pytest.approx([0.0, north_kn, north_kn, east_kn], rel=1e-3)
    assert result.fields["course"] == pytest.approx([0.0, 0.0, 0.0, 90.0], abs=1e-3)
    assert result.sparse["speedComputed"][0].tolist() == [0, 1, 2, 3]
    assert result.sparse["courseComputed"][0].tolist() == [0, 1, 2, 3]


def test_a_reported_speed_and_course_are_kept_even_when_zero() -> None:
    rows = [row(1, 20, speed=None), row(1, 10, lat=10.001, speed=0.0)]
    result = derive_speed_course(batch(rows), PipelineConfig())
    assert result.fields["speed"].tolist() == [0.0, 0.0]
    assert result.sparse["speedComputed"][0].tolist() == [0]  # the first row's speed only
    assert derive_speed_course(batch([row(1, 10, speed=5.0)]), PipelineConfig()) == SKIP


def test_derived_speed_skips_dropped_rows_and_late_rows_follow_the_kept_row_before_them() -> None:
    rows = [row(1, 50, speed=None), row(1, 40, lat=10.001, speed=None), row(1, 30, lat=10.002, speed=None)]
    rows += [row(1, 20, lat=10.003, speed=None)]
    b = without(batch(rows, {1: state(35, lat=10.0015)}), 2)
    speed = derive_speed_course(b, PipelineConfig()).fields["speed"]
    kn_per_step = STEP_M / 10 * 3600 / 1852
    assert b.late.tolist() == [True, True, False, False]
    # Late rows: the first has no kept row before it, the second follows the first. The row after the
    # dropped one follows the stored state (0.0015 degree, 15 s before).
    assert speed[[0, 1, 3]] == pytest.approx([0.0, kn_per_step, 1.5 * STEP_M / 15 * 3600 / 1852], rel=1e-3)
