"""deviceMoving / deviceStopped agree with the trips report: at each trip's departure and arrival, on
made-up traces fed a batch at a time (state carried only by the device row), through the
store on both databases and through the real worker."""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.factories import add_device
from tests.support.fleet import JITTER
from tests.support.traces import Trace, at
from tests.support.workers import run_burst
from tracker_jobs.core.config import Settings, load_settings
from tracker_jobs.core.db import create_engine, session_factory, transaction
from tracker_jobs.core.trip_rule import DetectionParams, trip_defaults, with_attributes
from tracker_jobs.devices.models import Device
from tracker_jobs.events.models import Event
from tracker_jobs.jobs.refs import POSITIONS
from tracker_jobs.positions.motion_events import (
    DEVICE_MOVING,
    DEVICE_STOPPED,
    EVENT_AT,
    DetectMotion,
    MotionState,
    advance,
    load_motion,
    update,
)
from tracker_jobs.positions.pipeline import PIPELINE, DeviceState, PipelineConfig, run_pipeline
from tracker_jobs.positions.record import PositionRecord
from tracker_jobs.positions.service import store_batch
from tracker_jobs.reports import analysis
from tracker_jobs.reports.detection import detect
from tracker_jobs.reports.loading import DeviceInfo

Client = TestClient[Any, Any]
START = at("2026-03-02T08:00:00+00:00")
METRES_PER_DEGREE = 111_319.49
DEFAULTS = DetectionParams(200, 180, 3600, None, 60)  # the settings' defaults


# -- the parameters are the report's (core/trip_rule.py, shared) --------------------------------------


def test_the_settings_are_overridden_by_valid_device_attributes_and_invalid_ones_are_named() -> None:
    settings = load_settings({"TRACKER_REPORT_MIN_DISTANCE": "150", "TRACKER_REPORT_MIN_TRIP_DISTANCE": "500"})
    assert trip_defaults(settings) == DetectionParams(150, 180, 3600, 500.0, 60)
    assert trip_defaults(load_settings({})) == DEFAULTS
    own = {"minDistance": 80, "minDuration": 60.5, "stopGap": 600, "minTripDistance": 0, "minTripDuration": 0}
    assert with_attributes(DEFAULTS, {**own, "color": "red"}) == (DetectionParams(80, 60.5, 600, 0.0, 0.0), {})
    # An invalid value leaves its setting in force here (the report fails that device with the problem).
    params, problems = with_attributes(DEFAULTS, {"minDistance": -5, "minDuration": True, "stopGap": "x"})
    assert params == DEFAULTS
    assert problems == {
        "minDistance": "must be a positive number, got -5",
        "minDuration": "must be a positive number, got True",
        "stopGap": "must be a positive number, got 'x'",
    }
    with pytest.raises(ValueError, match="device 1: attribute stopGap must be a positive number"):
        analysis.detection_params(DEFAULTS, DeviceInfo(1, "van", {"stopGap": "x"}))


# -- the state machine against the report's detection, on random traces ---------------------------


def _random_trace(rng: random.Random) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parking with jitter, driving, creeping, single hops and silences, at various rates."""
    t = 1_767_225_600 * 1_000_000
    north = east = 0.0
    times: list[int] = []
    lats: list[float] = []
    lons: list[float] = []

    def add(jitter_n: float = 0.0, jitter_e: float = 0.0) -> None:
        times.append(t)
        lats.append(52.5 + (north + jitter_n) / METRES_PER_DEGREE)
        lons.append(13.4 + (east + jitter_e) / (METRES_PER_DEGREE * math.cos(math.radians(52.5))))

    for _ in range(rng.randint(1, 12)):
        kind = rng.choice(["park", "drive", "creep", "hop", "silence"])
        every = rng.choice([1, 5, 10, 30, 60]) * 1_000_000
        if kind == "park":
            for _ in range(rng.randint(1, 40)):
                t += every
                add(rng.uniform(-60, 60), rng.uniform(-60, 60))
        elif kind == "drive":
            step, heading = rng.uniform(20, 600), rng.uniform(0, 2 * math.pi)
            for _ in range(rng.randint(1, 40)):
                t += every
                north, east = north + step * math.cos(heading), east + step * math.sin(heading)
                add()
        elif kind == "creep":
            step = rng.uniform(1, 30)
            for _ in range(rng.randint(1, 60)):
                t += every
                north += step
                add()
        elif kind == "hop":
            t += every
            east += rng.uniform(150, 350)
            add()
        else:
            t += rng.choice([1000, 3000, 4000, 10_000]) * 1_000_000
    return np.array(times, dtype=np.int64), np.array(lats), np.array(lons)


@pytest.mark.parametrize("seed", range(40))
def test_events_are_the_reports_trips_however_the_positions_are_batched(seed: int) -> None:
    rng = random.Random(seed)
    times, lats, lons = _random_trace(rng)
    if not len(times):
        return
    params = DetectionParams(
        min_distance_m=rng.choice([50.0, 100.0, 200.0]),
        min_duration_s=rng.choice([30.0, 60.0, 180.0]),
        stop_gap_s=rng.choice([600.0, 3600.0]),
        min_trip_distance_m=rng.choice([None, 0.0, 300.0]),
        min_trip_duration_s=rng.choice([0.0, 60.0, 120.0]),
    )
    detection = detect(times, lats, lons, DetectionParams(**asdict(params)))
    for attempt in range(5):  # batches of 1, then random sizes
        state: MotionState | None = None
        moving: list[int] = []
        stopped: list[int] = []
        i = 0
        while i < len(times):
            j = min(len(times), i + (1 if attempt == 0 else rng.choice([1, 2, 3, 7, 50, 1000])))
            state, events = update(state, times[i:j], lats[i:j], lons[i:j], params)
            assert state is not None
            state = MotionState.from_json(json.loads(json.dumps(state.to_json())))  # as stored
            for event in events:
                assert event.index < 0 or times[i + event.index] == event.at.t_us  # a row: its own position
                (moving if event.type == DEVICE_MOVING else stopped).append(event.at.t_us)
            i = j
        starts = times[detection.trip_starts].tolist()
        ends = times[detection.trip_ends].tolist()
        still_moving = bool(len(ends)) and int(detection.trip_ends[-1]) == len(times) - 1
        # No deviceStopped for a trip the positions end in; none either for one the positions begin with.
        assert stopped == (ends[:-1] if still_moving else ends)
        expected = starts[1:] if starts and starts[0] == times[0] else starts
        # The last trip's deviceMoving may still wait for a position that makes it certain.
        assert moving == expected or (still_moving and moving == expected[:-1])


def test_many_devices_at_once_are_each_as_alone() -> None:
    rng = random.Random(7)
    traces = [_random_trace(rng) for _ in range(6)]
    params = [DetectionParams(rng.choice([50.0, 200.0]), rng.choice([60.0, 180.0]), 3600.0, None, 60.0) for _ in traces]
    alone: list[list[tuple[str, int]]] = []
    for (times, lats, lons), own in zip(traces, params, strict=True):
        _, events = update(None, times, lats, lons, own)
        alone.append([(event.type, event.at.t_us) for event in events])
    states: list[MotionState | None] = [None] * len(traces)
    together: list[list[tuple[str, int]]] = [[] for _ in traces]
    cursors = [0] * len(traces)
    while any(cursor < len(trace[0]) for cursor, trace in zip(cursors, traces, strict=True)):
        parts = []
        for k, (times, _, _) in enumerate(traces):
            size = rng.choice([0, 1, 4, 30])  # some devices sit a batch out
            parts.append(range(cursors[k], min(len(times), cursors[k] + size)))
            cursors[k] = parts[-1].stop
        device = np.concatenate([np.full(len(part), k, dtype=np.int64) for k, part in enumerate(parts)])
        pick = [(traces[k][column][part.start : part.stop]) for column in range(3) for k, part in enumerate(parts)]
        count = len(parts)
        times, lats, lons = (np.concatenate(pick[c * count : (c + 1) * count]) for c in range(3))
        states, found = advance(states, params, device, times.astype(np.int64), lats, lons)
        for k, events in enumerate(found):
            together[k] += [(event.type, event.at.t_us) for event in events]
    assert together == alone


# -- the pipeline step -----------------------------------------------------------------------------


T0 = 1_767_225_600.0


def _fix(device: int, second: float, east_m: float, *, valid: bool = True) -> PositionRecord:
    longitude = 13.4 + east_m / (METRES_PER_DEGREE * math.cos(math.radians(52.5)))
    return PositionRecord(
        device_id=device, fix_time=T0 + second, latitude=52.5, longitude=longitude, speed=10.0, valid=valid
    )


def _newest(result: Any) -> dict[int, DeviceState]:
    return {
        device: DeviceState(
            r.fix_time,
            r.latitude,
            r.longitude,
            r.attributes["totalDistance"],
            r.attributes,
            result.motion_states[device],
        )
        for device, r in result.newest.items()
    }


def test_the_step_finds_every_devices_events_and_leaves_each_devices_state_for_its_row() -> None:
    step = (*PIPELINE, DetectMotion(DEFAULTS, {2: DetectionParams(50, 60, 3600, None, 0)}))
    parked = [_fix(1, 30 * i, 0) for i in range(10)]  # parked 4.5 min: stopped from its first position
    drives = [_fix(1, 300 + 30 * i, 300 * (i + 1)) for i in range(6)]  # 1.8 km in 3 min
    arrives = [_fix(1, 480 + 30 * i, 1800) for i in range(8)]  # parked again: confirmed 180 s later
    # Device 2 moves 60 m: a trip by its own minDistance of 50 m, no movement by the settings' 200 m.
    other = [_fix(2, 30 * i, 0) for i in range(4)] + [_fix(2, 120 + 30 * i, 60) for i in range(4)]
    other += [_fix(2, 240, 60, valid=False)]  # left out, as the report leaves it out
    result = run_pipeline([*parked, *drives, *arrives, *other], {}, PipelineConfig(), T0 + 3600, steps=step)
    found = [(e.position.device_id, e.type, e.position.fix_time - T0) for e in result.events]
    # Device 1 departs from the position before the first one 200 m away, and arrives where the
    # positions stay within 200 m for 180 s; device 2 likewise by its own 50 m and 60 s.
    assert found == [
        (1, DEVICE_MOVING, 270.0),
        (2, DEVICE_MOVING, 90.0),
        (1, DEVICE_STOPPED, 450.0),
        (2, DEVICE_STOPPED, 120.0),
    ]
    assert all(e.attributes == {} for e in result.events)  # all at rows of this batch
    states = {d: MotionState.from_json(value) for d, value in result.motion_states.items()}
    assert states[1] is not None
    assert states[1].anchor is not None
    assert states[1].anchor.t_us == round((T0 + 450) * 1e6)
    assert result.newest[2].fix_time == T0 + 240  # the invalid position is the newest; the state ends before
    assert states[2] is not None
    assert states[2].last.t_us == round((T0 + 210) * 1e6)
    # No position carries it (a moving device's state holds every position that may be its arrival).
    assert not any("tripState" in record.attributes for record in result.kept)

    # The next batch: device 1 leaves. Its departure is the stored newest: the event is found at the
    # batch's newest row, marked with the departure's own time and place for the store.
    leaves = [_fix(1, 720 + 30 * i, 1800 + 400 * (i + 1)) for i in range(4)]
    late = [_fix(1, 100, 5000)]  # older than the newest: no event, no state
    after = run_pipeline([*leaves, *late], _newest(result), PipelineConfig(), T0 + 3600, steps=step)
    [moved] = after.events
    assert (moved.type, moved.position.fix_time) == (DEVICE_MOVING, T0 + 810)
    assert moved.attributes == {EVENT_AT: [round((T0 + 690) * 1e6), 52.5, arrives[-1].longitude]}
    # A batch with nothing valid leaves the state as it was.
    invalid = run_pipeline([_fix(1, 900, 0, valid=False)], _newest(after), PipelineConfig(), T0 + 3600, steps=step)
    assert invalid.events == []
    assert invalid.motion_states[1] == after.motion_states[1]


def test_a_device_without_state_starts_afresh_and_no_deviceMoving_for_its_first_trip() -> None:
    step = (*PIPELINE, DetectMotion(DEFAULTS))
    drives = [_fix(1, 30 * i, 300 * i) for i in range(8)]
    result = run_pipeline(
        drives, {1: DeviceState(T0 - 60, 52.5, 13.4, 0.0, {})}, PipelineConfig(), T0 + 3600, steps=step
    )
    assert result.events == []
    state = MotionState.from_json(result.motion_states[1])
    assert state is not None
    assert state.departure is not None
    assert state.made


# -- through the store, on both databases: the trips report agrees -----------------------------------


def _trace() -> tuple[Trace, list[int]]:
    """Three trips: one ended by a stop, a movement too short to be one, one ended by a silence, a
    third after it; and where to split it into batches (each a restart)."""
    trace = Trace(START)
    trace.park(20, jitter_m=JITTER)  # home
    trace.drive(12, step_m=450)  # trip 1
    work = trace.park(20, jitter_m=JITTER)
    trace.drive(1, step_m=250)  # leaves work by 250 m, stays 30 s: too short (60 s) to be a trip
    trace.park(12, jitter_m=JITTER)
    road = trace.drive(10, step_m=400)  # trip 2 ...
    trace.silence(7200)  # ... ends where the silence begins
    trace.park(10, jitter_m=JITTER)
    trace.drive(8, step_m=500)  # trip 3
    trace.park(15, jitter_m=JITTER)
    # Split: 2 positions into the work stop (its arrival undecided), at trip 2's first position far
    # from its stop (its departure stored, its trip not yet certain), and in the middle of trip 2.
    return trace, [work[2], road[0] + 1, road[5]]


def _records(device: int, trace: Trace) -> list[PositionRecord]:
    return [
        PositionRecord(
            device_id=device,
            fix_time=fix.fix_time.timestamp(),
            latitude=fix.latitude,
            longitude=fix.longitude,
            speed=fix.speed,
        )
        for fix in trace.fixes
    ]


async def _motion_events(sessions: async_sessionmaker[AsyncSession], device: int) -> dict[str, list[Any]]:
    async with sessions() as session:
        query = select(Event).where(
            col(Event.device_id) == device, col(Event.type).in_([DEVICE_MOVING, DEVICE_STOPPED])
        )
        events = (await session.execute(query.order_by(col(Event.event_time)))).scalars().all()
    found: dict[str, list[Any]] = {DEVICE_MOVING: [], DEVICE_STOPPED: []}
    for event in events:
        found[event.type].append((event.event_time, event.position_id, event.latitude, event.longitude))
    return found


async def _trips(admin_client: Client, headers: dict[str, str], device: int) -> list[dict[str, Any]]:
    params = {"deviceId": str(device), "from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()}
    response = await admin_client.get("/api/reports/trips", params=params, headers=headers)
    assert response.status == 200
    trips: list[dict[str, Any]] = await response.json()
    return trips


def _expected(trips: list[dict[str, Any]]) -> dict[str, list[Any]]:
    def when(text: str) -> datetime:
        return datetime.fromisoformat(text).astimezone(UTC)

    return {
        DEVICE_MOVING: [(when(t["startTime"]), t["startPositionId"], t["startLat"], t["startLon"]) for t in trips],
        DEVICE_STOPPED: [(when(t["endTime"]), t["endPositionId"], t["endLat"], t["endLon"]) for t in trips],
    }


async def test_events_and_the_trips_report_agree_across_batches_and_restarts(
    settings: Settings, admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "van")
    trace, splits = _trace()
    records = _records(device, trace)
    now = records[-1].fix_time + 3600
    bounds = [0, *splits, len(records)]
    for first, last in itertools.pairwise(bounds):
        # Each batch in a process of its own: the state comes only from the database.
        engine = create_engine(settings.database_url)
        try:
            await store_batch(session_factory(engine), _records(device, trace)[first:last], PipelineConfig(), now)
        finally:
            await engine.dispose()
    trips = await _trips(admin_client, admin_headers, device)
    assert len(trips) == 3
    assert await _motion_events(sessions, device) == _expected(trips)
    # A batch run again (after a crash) adds nothing.
    again = await store_batch(sessions, _records(device, trace)[splits[1] : splits[2]], PipelineConfig(), now)
    assert again.events == 0
    assert await _motion_events(sessions, device) == _expected(trips)


async def test_a_devices_own_parameters_reach_both(
    settings: Settings, admin_client: Client, admin_headers: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    device = await add_device(sessions, "scooter")
    async with transaction(sessions) as session:
        found = await session.get(Device, device)
        assert found is not None
        found.attributes = {"minDistance": 100, "minDuration": 120, "minTripDuration": 0}
    trace = Trace(START)
    trace.park(10)
    trace.drive(4, step_m=60)  # 240 m: a trip by its 100 m, none by the settings' 200 m and 60 s
    trace.park(10)
    async with sessions() as session:
        defaults = trip_defaults(settings)
        assert (await load_motion(session, [device], defaults)).params[device] == DetectionParams(
            100, 120, 3600, None, 0
        )
    await store_batch(
        sessions,
        _records(device, trace),
        PipelineConfig.from_settings(settings),
        trace.fixes[-1].fix_time.timestamp() + 60,
    )
    trips = await _trips(admin_client, admin_headers, device)
    assert len(trips) == 1
    assert await _motion_events(sessions, device) == _expected(trips)


async def test_the_real_worker_finds_the_reports_trips(
    settings: Settings,
    redis: ArqRedis,
    admin_client: Client,
    admin_headers: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    device = await add_device(sessions, "truck")
    trace, splits = _trace()
    body = [
        {
            "deviceId": device,
            "fixTime": fix.fix_time.isoformat(),
            "latitude": fix.latitude,
            "longitude": fix.longitude,
            "speed": fix.speed,
        }
        for fix in trace.fixes
    ]
    for part in (body[: splits[1]], body[splits[1] :]):  # two requests, each drained by a worker of its own
        assert (await admin_client.post("/api/positions", json=part, headers=admin_headers)).status == 202
        await run_burst(settings, POSITIONS)
    trips = await _trips(admin_client, admin_headers, device)
    assert len(trips) == 3
    assert await _motion_events(sessions, device) == _expected(trips)
