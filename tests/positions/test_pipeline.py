"""The position pipeline as a pure function: every filter, late positions, distance and odometer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tracker_jobs.positions.pipeline import DeviceState, PipelineConfig, run_pipeline
from tracker_jobs.positions.record import PositionRecord

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
# 0.001 degree of latitude is ~111.3 m with Traccar's radius.
STEP_M = 111.32


def row(device: int, t: float, lat: float = 10.0, lon: float = 20.0, **extra: Any) -> PositionRecord:
    return PositionRecord(
        **{"accuracy": 5.0, **extra, "device_id": device, "fix_time": t, "latitude": lat, "longitude": lon}
    )


def times(result: Any, device: int | None = None) -> list[float]:
    return [r.fix_time for r in result.kept if device is None or r.device_id == device]


def test_sorts_by_device_then_time_and_accumulates_the_odometer() -> None:
    rows = [row(2, NOW - 10), row(1, NOW - 20, lat=10.002), row(1, NOW - 30, lat=10.001), row(1, NOW - 40)]
    result = run_pipeline(rows, {}, PipelineConfig(), NOW)
    assert [(r.device_id, r.fix_time) for r in result.kept] == [
        (1, NOW - 40),
        (1, NOW - 30),
        (1, NOW - 20),
        (2, NOW - 10),
    ]
    distances = [r.attributes["distance"] for r in result.kept]
    assert distances[0] == 0.0  # a device's first position ever
    assert distances[3] == 0.0
    assert distances[1] == pytest.approx(STEP_M, rel=1e-3)
    assert result.kept[2].attributes["totalDistance"] == pytest.approx(2 * STEP_M, rel=1e-3)
    assert set(result.newest) == {1, 2}
    assert result.newest[1].fix_time == NOW - 20
    assert not result.dropped


def test_odometer_continues_from_the_stored_state() -> None:
    state = {7: DeviceState(fix_time=NOW - 100, latitude=10.0, longitude=20.0, odometer=1000.0)}
    result = run_pipeline([row(7, NOW - 50, lat=10.001)], state, PipelineConfig(), NOW)
    assert result.kept[0].attributes["distance"] == pytest.approx(STEP_M, rel=1e-3)
    assert result.kept[0].attributes["totalDistance"] == pytest.approx(1000 + STEP_M, rel=1e-3)


@pytest.mark.parametrize(
    ("bad", "config", "reason"),
    [
        (row(1, NOW - 5, valid=False), PipelineConfig(filter_invalid=True), "invalid"),
        (row(1, NOW - 5, lat=0.0, lon=0.0), PipelineConfig(), "zero"),
        (row(1, NOW + 2 * 86_400), PipelineConfig(), "future"),
        (row(1, NOW - 5, accuracy=500.0), PipelineConfig(max_accuracy_m=100), "accuracy"),
        (row(1, NOW - 10), PipelineConfig(), "duplicate"),
    ],
)
def test_each_filter_drops_with_its_reason(bad: PositionRecord, config: PipelineConfig, reason: str) -> None:
    good = row(1, NOW - 10)
    result = run_pipeline([good, bad], {}, config, NOW)
    assert times(result) == [NOW - 10]
    assert result.dropped == {reason: 1}


def test_filters_that_are_off_keep_what_they_would_drop() -> None:
    rows = [row(1, NOW - 9, valid=False), row(1, NOW - 8, accuracy=900.0)]
    result = run_pipeline(rows, {}, PipelineConfig(), NOW)
    assert len(result.kept) == 2


def test_a_resent_position_is_a_duplicate_of_the_stored_state() -> None:
    state = {1: DeviceState(fix_time=NOW - 10, latitude=10.0, longitude=20.0, odometer=0.0)}
    result = run_pipeline([row(1, NOW - 10)], state, PipelineConfig(), NOW)
    assert result.kept == []
    assert result.dropped == {"duplicate": 1}


def test_one_glitch_is_dropped_and_the_track_after_it_kept() -> None:
    # 10 s apart: ~111 m is ~21.6 kn; a jump of 1 degree (~111 km) in 10 s is ~21,600 kn.
    rows = [row(1, NOW - 40), row(1, NOW - 30, lat=11.0), row(1, NOW - 20, lat=10.001), row(1, NOW - 10, lat=10.002)]
    result = run_pipeline(rows, {}, PipelineConfig(max_speed_kn=100), NOW)
    assert times(result) == [NOW - 40, NOW - 20, NOW - 10]
    assert result.dropped == {"jump": 1}
    assert result.kept[1].attributes["distance"] == pytest.approx(STEP_M, rel=1e-3)


def test_jump_is_judged_against_the_stored_state_too() -> None:
    state = {1: DeviceState(fix_time=NOW - 20, latitude=10.0, longitude=20.0, odometer=0.0)}
    result = run_pipeline([row(1, NOW - 10, lat=40.0)], state, PipelineConfig(), NOW)
    assert result.dropped == {"jump": 1}


def test_late_positions_are_stored_but_do_not_move_the_device() -> None:
    state = {1: DeviceState(fix_time=NOW - 10, latitude=10.0, longitude=20.0, odometer=500.0)}
    result = run_pipeline([row(1, NOW - 100, lat=10.05)], state, PipelineConfig(), NOW)
    assert times(result) == [NOW - 100]
    assert result.kept[0].attributes["distance"] == 0.0
    assert result.kept[0].attributes["totalDistance"] == 500.0
    assert result.newest == {}


def test_thinning_by_period_and_distance() -> None:
    rows = [row(1, NOW - 100 + s, lat=10.0 + s * 0.0001) for s in range(31)]  # 1 s apart, ~11 m apart
    by_period = run_pipeline([replace(r) for r in rows], {}, PipelineConfig(min_period_s=10), NOW)
    assert times(by_period) == [NOW - 100, NOW - 90, NOW - 80, NOW - 70]
    assert by_period.dropped == {"thinned": 27}
    by_distance = run_pipeline([replace(r) for r in rows], {}, PipelineConfig(min_distance_m=50), NOW)
    assert times(by_distance) == [NOW - 100, NOW - 95, NOW - 90, NOW - 85, NOW - 80, NOW - 75, NOW - 70]


def test_motion_follows_speed() -> None:
    result = run_pipeline([row(1, NOW - 2, speed=0.0), row(1, NOW - 1, speed=12.0)], {}, PipelineConfig(), NOW)
    assert [r.attributes["motion"] for r in result.kept] == [False, True]


def test_a_trace_without_speed_gets_derived_speed_motion_and_a_mark() -> None:
    rows = [row(1, NOW - 30, speed=None), row(1, NOW - 20, lat=10.001, speed=None), row(1, NOW - 10, speed=0.0)]
    rows.append(row(1, NOW - 5, lat=10.0, speed=None))  # stopped where it was
    result = run_pipeline(rows, {}, PipelineConfig(), NOW)
    assert [r.speed for r in result.kept] == pytest.approx([0.0, STEP_M / 10 * 3600 / 1852, 0.0, 0.0], rel=1e-3)
    assert [r.attributes["motion"] for r in result.kept] == [False, True, False, False]
    assert [r.attributes.get("speedComputed") for r in result.kept] == [True, True, None, True]
    assert all(r.course is not None for r in result.kept)
