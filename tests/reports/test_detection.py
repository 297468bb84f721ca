"""Trips, stops and summaries of made-up traces whose answers are known exactly; no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from tests.support.loop_detection import detect_by_loop
from tests.support.traces import Trace, assert_rows, at
from tracker_jobs.core.trip_rule import DetectionParams
from tracker_jobs.reports.analysis import analyse, attach_attributes, detection_params, frame_rows
from tracker_jobs.reports.detection import detect
from tracker_jobs.reports.loading import DeviceInfo

PARAMS = DetectionParams(min_distance_m=200, min_duration_s=180, stop_gap_s=3600)
VAN = DeviceInfo(1, "van", {})
# Offsets while parked: up to 150 m from where the van stopped, far more than that in total path.
JITTER = ((0.0, 0.0), (120.0, -80.0), (-90.0, 110.0), (60.0, 135.0), (-140.0, -40.0))


def results(trace: Trace, daily_timezone: str | None = None, params: DetectionParams = PARAMS) -> dict[str, Any]:
    frames = attach_attributes(analyse(VAN, trace.track(), params, daily_timezone), {})
    return {name: frame_rows(getattr(frames, name), name) for name in ("trips", "stops", "summary")}


def test_park_drive_park_with_jitter() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    home = trace.park(20, jitter_m=JITTER)
    road = trace.drive(12, step_m=450)
    work = trace.park(30, jitter_m=JITTER)
    found = results(trace)
    # The van arrives where its last driving position is: the stop begins there.
    assert_rows(found["trips"], [trace.expected_trip(home[-1], road[-1])])
    assert_rows(found["stops"], [trace.expected_stop(home[0], home[-1]), trace.expected_stop(road[-1], work[-1])])
    distance = trace.road_m(home[-1], road[-1])
    driving_s = (trace.fixes[road[-1]].fix_time - trace.fixes[home[-1]].fix_time).total_seconds()
    assert_rows(
        found["summary"],
        [
            {
                "deviceId": 1,
                "deviceName": "van",
                "startTime": trace.fixes[0].fix_time,
                "endTime": trace.fixes[-1].fix_time,
                "distance": trace.road_m(0, len(trace.fixes) - 1),  # parked jitter included: the odometer's
                "drivingDistance": distance,
                "averageSpeed": distance / driving_s / (1852 / 3600),
                "maxSpeed": trace.fixes[road[-1]].speed,
                "startOdometer": None,
                "endOdometer": None,
                "engineHours": None,
                "spentFuel": None,
            }
        ],
    )


def test_trip_crossing_midnight_is_one_trip_and_splits_by_local_day() -> None:
    # 23:50 to 00:10 in Berlin (UTC+1 in winter): one trip, its road split at local midnight.
    trace = Trace(at("2026-01-14T22:40:00+00:00"))
    before = trace.park(20)
    road = trace.drive(40, step_m=400)
    trace.park(20)
    found = results(trace, daily_timezone="Europe/Berlin")
    assert_rows(found["trips"], [trace.expected_trip(before[-1], road[-1])])
    assert trace.fixes[before[-1]].fix_time < at("2026-01-15T00:00:00+01:00") < trace.fixes[road[-1]].fix_time
    midnight = next(i for i in road if trace.fixes[i].fix_time >= at("2026-01-15T00:00:00+01:00"))
    first_day, second_day = found["summary"]
    assert first_day["endTime"] == trace.fixes[midnight - 1].fix_time
    assert second_day["startTime"] == trace.fixes[midnight].fix_time
    assert first_day["distance"] == pytest.approx(trace.road_m(before[-1], midnight - 1))
    assert second_day["distance"] == pytest.approx(trace.road_m(midnight - 1, road[-1]))
    whole = results(trace)["summary"][0]["distance"]
    assert first_day["distance"] + second_day["distance"] == pytest.approx(whole)


def test_gap_longer_than_stop_gap_is_a_stop() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    first_leg = trace.drive(15, step_m=500)
    trace.silence(2 * 3600)  # the tracker was off; it comes back 3 km on, still driving
    trace.east_m += 3000
    second_leg = trace.drive(15, step_m=500)
    found = results(trace)
    assert_rows(
        found["trips"],
        [trace.expected_trip(first_leg[0], first_leg[-1]), trace.expected_trip(second_leg[0], second_leg[-1])],
    )
    assert_rows(found["stops"], [trace.expected_stop(first_leg[-1], second_leg[0])])
    assert found["stops"][0]["duration"] == (2 * 3600 + 30) * 1000


def test_silence_while_parked_stays_one_stop() -> None:
    trace = Trace(at("2026-03-02T18:00:00+00:00"))
    home = trace.drive(10, step_m=500)
    trace.park(10, jitter_m=JITTER)
    trace.silence(10 * 3600)
    morning = trace.park(10, jitter_m=JITTER)
    work = trace.drive(10, step_m=500)
    found = results(trace)
    assert_rows(found["stops"], [trace.expected_stop(home[-1], morning[-1])])
    assert_rows(found["trips"], [trace.expected_trip(home[0], home[-1]), trace.expected_trip(morning[-1], work[-1])])


def test_device_that_never_moves() -> None:
    trace = Trace(at("2026-03-02T00:00:00+00:00"))
    parked = trace.park(2880, jitter_m=JITTER)
    found = results(trace)
    assert found["trips"] == []
    assert_rows(found["stops"], [trace.expected_stop(parked[0], parked[-1])])
    assert found["summary"][0]["distance"] == pytest.approx(trace.road_m(0, len(trace.fixes) - 1))
    assert found["summary"][0]["drivingDistance"] == 0.0
    assert found["summary"][0]["averageSpeed"] == 0.0


def test_drift_just_inside_min_distance_is_no_trip() -> None:
    trace = Trace(at("2026-03-02T00:00:00+00:00"))
    trace.park(10)
    trace.park(40, jitter_m=((0.0, 195.0), (0.0, 150.0), (0.0, 199.0)))
    found = results(trace)
    assert found["trips"] == []
    assert len(found["stops"]) == 1


def test_halt_shorter_than_min_duration_does_not_end_the_trip() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    home = trace.park(10)
    trace.drive(10, step_m=500)
    trace.park(5)  # two and a half minutes at a red light
    road = trace.drive(10, step_m=500)
    trace.park(10)
    found = results(trace)
    assert_rows(found["trips"], [trace.expected_trip(home[-1], road[-1])])


def test_moving_at_both_ends_of_the_range() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    first = trace.drive(10, step_m=500)
    stop = trace.park(10)
    last = trace.drive(10, step_m=500)
    found = results(trace)
    assert_rows(found["trips"], [trace.expected_trip(first[0], first[-1]), trace.expected_trip(stop[-1], last[-1])])
    assert_rows(found["stops"], [trace.expected_stop(first[-1], stop[-1])])


def test_a_stop_still_short_at_the_end_is_not_confirmed() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    road = trace.drive(10, step_m=500)
    trace.park(3)  # a minute: the data ends before the van could count as stopped
    found = results(trace)
    assert_rows(found["trips"], [trace.expected_trip(road[0], len(trace.fixes) - 1)])
    assert found["stops"] == []


def test_empty_and_single_position_tracks() -> None:
    empty = results(Trace(at("2026-03-02T08:00:00+00:00")))
    assert (empty["trips"], empty["stops"]) == ([], [])
    assert empty["summary"][0]["distance"] == 0.0
    assert empty["summary"][0]["startTime"] is None
    assert results(Trace(at("2026-03-02T08:00:00+00:00")), daily_timezone="UTC")["summary"] == []
    single = Trace(at("2026-03-02T08:00:00+00:00"))
    single.park(1)
    assert (results(single)["trips"], results(single)["stops"]) == ([], [])


def test_device_attributes_override_the_settings() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    trace.park(10)
    trace.drive(2, step_m=90)
    trace.park(10)
    assert results(trace)["trips"] == []
    strict = detection_params(PARAMS, DeviceInfo(1, "van", {"minDistance": 50, "minDuration": 60.0}))
    assert strict == DetectionParams(50.0, 60.0, 3600)
    assert len(results(trace, params=strict)["trips"]) == 1
    with pytest.raises(ValueError, match="device 1: attribute stopGap must be a positive number"):
        detection_params(PARAMS, DeviceInfo(1, "van", {"stopGap": "soon"}))


def test_odometer_fuel_and_engine_hours_come_from_boundary_positions() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    home = trace.park(10)
    road = trace.drive(10, step_m=500)
    trace.park(10)
    frames = analyse(VAN, trace.track(), PARAMS, None)
    ids = {fix.position_id: index for index, fix in enumerate(trace.fixes)}
    last = len(trace.fixes) - 1
    assert frames.boundary_ids() == {trace.fixes[i].position_id for i in (home[0], home[-1], road[-1], last)}
    attributes = {
        position_id: {"totalDistance": 1000.0 + 10 * index, "fuel": 50.0 - index / 10, "hours": 3_600_000 * index}
        for position_id, index in ids.items()
    }
    attributes[trace.fixes[home[-1]].position_id]["odometer"] = 777.0  # the device's own odometer wins
    rows = {
        name: frame_rows(getattr(attach_attributes(frames, attributes), name), name)
        for name in ("trips", "stops", "summary")
    }
    trip = rows["trips"][0]
    assert (trip["startOdometer"], trip["endOdometer"]) == (777.0, 1000.0 + 10 * road[-1])
    assert trip["spentFuel"] == pytest.approx((road[-1] - home[-1]) / 10)
    assert [stop["engineHours"] for stop in rows["stops"]] == [3_600_000 * 9, 3_600_000 * (last - road[-1])]
    assert rows["summary"][0]["engineHours"] == 3_600_000 * last
    assert rows["summary"][0]["startOdometer"] == 1000.0


@dataclass
class _Fix:
    fix_time: datetime
    latitude: float
    longitude: float


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_detection_equals_the_per_position_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(150):
        count = int(rng.integers(0, 80))
        gaps_s = rng.choice([1, 10, 30, 60, 200, 4000], size=count, p=[0.2, 0.3, 0.3, 0.1, 0.05, 0.05])
        times_us = (np.cumsum(gaps_s) + 1_767_225_600) * 1_000_000
        steps = rng.choice([0.0, 5.0, 60.0, 150.0, 400.0], size=count)
        heading = rng.uniform(0, 2 * np.pi, count)
        latitude = 48 + np.cumsum(steps * np.sin(heading)) / 111_000
        longitude = 11 + np.cumsum(steps * np.cos(heading)) / 74_000
        params = DetectionParams(
            float(rng.choice([100, 200])),
            float(rng.choice([60, 180])),
            float(rng.choice([300, 3600])),
            min_trip_distance_m=rng.choice([None, 0.0, 150.0, 300.0]),
            min_trip_duration_s=float(rng.choice([0, 60, 120])),
        )
        found = detect(times_us.astype(np.int64), latitude, longitude, params)
        fixes = [
            _Fix(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(t)), float(a), float(b))
            for t, a, b in zip(times_us, latitude, longitude, strict=True)
        ]
        trips, stops = detect_by_loop(fixes, params)
        assert list(zip(found.trip_starts.tolist(), found.trip_ends.tolist(), strict=True)) == trips
        assert list(zip(found.stop_starts.tolist(), found.stop_ends.tolist(), strict=True)) == stops


def test_dense_trace_with_jitter_equals_the_per_position_loop() -> None:
    """One position a second, parked with metres of jitter: long windows that the bounding boxes decide."""
    rng = np.random.default_rng(2026)
    count = 3000
    times_us = (
        np.cumsum(rng.choice([1, 2, 30, 5000], size=count, p=[0.5, 0.3, 0.19, 0.01])) + 1_767_225_600
    ) * 1_000_000
    moving = (np.cumsum(rng.random(count) < 0.01) % 2).astype(bool)
    steps = np.where(moving, rng.uniform(0, 30, count), rng.normal(0, 3, count))
    heading = np.cumsum(rng.normal(0, 0.3, count))
    latitude = -0.001 + np.cumsum(steps * np.sin(heading)) / 111_000  # across the equator
    longitude = (179.99 + np.cumsum(steps * np.cos(heading)) / 111_000 + 180) % 360 - 180  # and the antimeridian
    found = detect(times_us.astype(np.int64), latitude, longitude, PARAMS)
    fixes = [
        _Fix(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(t)), float(a), float(b))
        for t, a, b in zip(times_us, latitude, longitude, strict=True)
    ]
    trips, stops = detect_by_loop(fixes, PARAMS)
    assert len(trips) > 5
    assert list(zip(found.trip_starts.tolist(), found.trip_ends.tolist(), strict=True)) == trips
    assert list(zip(found.stop_starts.tolist(), found.stop_ends.tolist(), strict=True)) == stops


# --- a city bus: stop-and-go traffic, a layover at the terminus, halts at bus stops ---

BUS = DetectionParams(
    min_distance_m=200, min_duration_s=180, stop_gap_s=3600, min_trip_distance_m=200, min_trip_duration_s=60
)


def trips_of(trace: Trace, params: DetectionParams = BUS) -> list[tuple[int, int]]:
    detection = detect(trace.track().fix_time_us, trace.track().latitude, trace.track().longitude, params)
    return list(zip(detection.trip_starts.tolist(), detection.trip_ends.tolist(), strict=True))


def test_stop_and_go_traffic_makes_no_micro_trips() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    trace.park(10)
    first_leg = trace.drive(10, step_m=400)
    for _ in range(12):  # a jam: 35 m, then a minute standing, twelve times
        trace.drive(1, step_m=35, every_s=20, speed=3)
        trace.park(3, every_s=20)
    second_leg = trace.drive(10, step_m=400)
    trace.park(10)
    # Without the safeguards, creeping out of the jam is a "trip" of 35 m in 20 s.
    unguarded = DetectionParams(200, 180, 3600, min_trip_distance_m=0)
    assert any(trace.road_m(a, b) < 200 for a, b in trips_of(trace, unguarded))
    (first, first_end), (second, second_end) = trips_of(trace)
    assert (first, first_end) == (first_leg[0] - 1, first_leg[-1])
    # The second trip sets out once the bus is minDistance from where the jam's stop began: in the jam.
    assert first_leg[-1] < second < second_leg[0]
    assert second_end == second_leg[-1]
    assert trace.road_m(second, second_end) >= 200
    # The jam up to there is one stop: the stops either side of each too-short movement became one.
    found = results(trace, params=BUS)
    assert [(stop["startTime"], stop["endTime"]) for stop in found["stops"]][1] == (
        trace.fixes[first_end].fix_time,
        trace.fixes[second].fix_time,
    )


def test_a_layover_at_the_terminus_splits_the_trips() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    trace.park(5)
    trace.drive(10, step_m=400)
    layover = trace.park(14)  # 7 minutes
    trace.drive(10, step_m=400)
    trace.park(5)
    assert len(trips_of(trace)) == 2
    assert trips_of(trace)[0][1] == layover[0] - 1


def test_short_halts_at_bus_stops_do_not_split_the_trip() -> None:
    trace = Trace(at("2026-03-02T08:00:00+00:00"))
    depot = trace.park(10)
    trace.drive(6, step_m=400)
    trace.park(3)  # a minute at a bus stop
    trace.drive(6, step_m=400)
    trace.park(4, every_s=30)  # two minutes at the next
    road = trace.drive(6, step_m=400)
    trace.park(10)
    assert trips_of(trace) == [(depot[-1], road[-1])]


def test_a_device_sets_its_own_trip_minimums() -> None:
    defaults = DetectionParams(200, 180, 3600, min_trip_duration_s=60)
    own = detection_params(defaults, DeviceInfo(1, "bus", {"minTripDistance": 500, "minTripDuration": 120}))
    assert (own.trip_distance_m, own.min_trip_duration_s) == (500.0, 120.0)
    # A trip distance left unset follows the device's own minDistance; one set stays as set.
    assert detection_params(defaults, DeviceInfo(1, "van", {"minDistance": 50})).trip_distance_m == 50.0
    explicit = DetectionParams(200, 180, 3600, min_trip_distance_m=200)
    assert detection_params(explicit, DeviceInfo(1, "van", {"minDistance": 50})).trip_distance_m == 200.0
    off = detection_params(defaults, DeviceInfo(1, "van", {"minTripDistance": 0, "minTripDuration": 0}))
    assert (off.trip_distance_m, off.min_trip_duration_s) == (0.0, 0.0)
