"""Ignition, alarm and overspeed events on hand-made positions: each compared with the position
before (in the batch, or the stored newest), one overspeed event per episode, none for late positions;
then through the store, once per device, type, time and subject."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.factories import add_device, add_maintenance
from tracker_jobs.core.db import transaction
from tracker_jobs.devices.models import Device
from tracker_jobs.events.models import Event
from tracker_jobs.positions.detectors import DetectOverspeed, detect_alarms, detect_ignition
from tracker_jobs.positions.pipeline import Batch, DeviceState, PipelineConfig, StepResult
from tracker_jobs.positions.record import PositionRecord
from tracker_jobs.positions.service import store_batch

T0 = 1_767_225_600.0


def at(second: float, speed: float = 10.0, device: int = 1, **attributes: Any) -> PositionRecord:
    lat = 52.0 + second * 1e-4
    return PositionRecord(
        device_id=device,
        fix_time=T0 + second,
        latitude=lat,
        longitude=13.0,
        speed=speed,
        course=0.0,
        attributes=attributes,
    )


def stored(second: float, **attributes: Any) -> DeviceState:
    return DeviceState(fix_time=T0 + second, latitude=52.0, longitude=13.0, odometer=0.0, attributes=attributes)


def events(result: StepResult) -> dict[str, list[int]]:
    return {detected.type: detected.rows.tolist() for detected in result.events}


def run(step: Any, rows: list[PositionRecord], states: dict[int, DeviceState] | None = None) -> StepResult:
    result: StepResult = step(Batch.from_rows(rows, states or {}, T0 + 3600), PipelineConfig())
    return result


def test_ignition_edges_and_no_event_without_a_value_before() -> None:
    rows = [at(0, ignition=True), at(10, ignition=False), at(20, ignition=False), at(30, ignition=True), at(40)]
    assert events(run(detect_ignition, rows)) == {"ignitionOn": [3], "ignitionOff": [1]}
    # The stored newest position says off: on at the batch's first position is an edge.
    assert events(run(detect_ignition, [at(10, ignition=True)], {1: stored(0, ignition=False)}))["ignitionOn"] == [0]
    # A late position (before the stored newest) makes none.
    assert events(run(detect_ignition, [at(0, ignition=True)], {1: stored(5, ignition=False)}))["ignitionOn"] == []


def test_an_alarm_is_raised_once_while_the_device_keeps_sending_it() -> None:
    rows = [at(0, alarm="sos"), at(10, alarm="sos,powerCut"), at(20, alarm="powerCut"), at(30), at(40, alarm="sos")]
    result = run(detect_alarms, rows, {1: stored(-10, alarm="sos")})
    (alarms,) = result.events
    assert alarms.rows.tolist() == [1, 4]
    assert alarms.attributes == [{"alarm": "powerCut"}, {"alarm": "sos"}]
    assert alarms.subject is not None
    assert len(set(alarms.subject.tolist())) == 2  # two alarms at one time stay two events


def test_one_overspeed_event_per_episode_with_its_speed_and_limit() -> None:
    speeds = [40, 55, 60, 45, 52, 40]  # two episodes over 50 kn
    rows = [at(10 * i, speed) for i, speed in enumerate(speeds)]
    result = run(DetectOverspeed({1: 50.0}), rows)
    (overspeed,) = result.events
    assert overspeed.rows.tolist() == [1, 4]
    assert overspeed.attributes == [{"speed": 55.0, "speedLimit": 50.0}, {"speed": 52.0, "speedLimit": 50.0}]
    since_rows, since = result.sparse["overspeedSince"]
    assert since_rows.tolist() == [1, 2, 4]
    assert since == [T0 + 10, T0 + 10, T0 + 40]


def test_overspeed_waits_for_the_minimal_duration_and_continues_across_batches() -> None:
    step = DetectOverspeed({1: 50.0}, minimal_s=25)
    rows = [at(0, 60), at(10, 60), at(20, 60), at(30, 60), at(40, 60)]
    assert events(run(step, rows))["deviceOverspeed"] == [3]  # 30 s after it began
    # The stored newest was in an episode that began 20 s before it: 5 s later it has lasted 25 s.
    continuing = run(step, [at(5, 60), at(15, 60)], {1: stored(0, overspeedSince=T0 - 20)})
    assert events(continuing)["deviceOverspeed"] == [0]
    assert continuing.sparse["overspeedSince"][1] == [T0 - 20, T0 - 20]
    # Its event was made already: the episode goes on without another.
    made = run(step, [at(5, 60)], {1: stored(0, overspeedSince=T0 - 40)})
    assert events(made)["deviceOverspeed"] == []


def test_on_a_derived_speed_one_position_over_the_limit_is_not_an_episode() -> None:
    def derived(speeds: list[float]) -> StepResult:
        batch = Batch.from_rows([at(10 * i, speed) for i, speed in enumerate(speeds)], {}, T0 + 3600)
        batch.sparse["speedComputed"] = (np.arange(len(speeds)), True)  # as derive_speed_course marks them
        result: StepResult = DetectOverspeed({1: 50.0})(batch, PipelineConfig())
        return result

    assert events(derived([40, 70, 40]))["deviceOverspeed"] == []
    assert events(derived([40, 70, 70]))["deviceOverspeed"] == [2]


async def test_detected_events_are_stored_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    device = await add_device(sessions, "speedy")
    async with transaction(sessions) as session:
        found = await session.get(Device, device)
        assert found is not None
        found.speed_limit = 50.0
    batch = [
        at(0, 40, device, ignition=False),
        at(10, 60, device, ignition=True, alarm="sos"),
        at(20, 65, device, ignition=True, alarm="sos"),
    ]
    first = await store_batch(sessions, batch, PipelineConfig(), T0 + 3600)
    assert first.events == 4  # and deviceOnline: a new device starts offline
    again = [at(0, 40, device), at(10, 60, device, ignition=True, alarm="sos"), at(20, 65, device, ignition=True)]
    assert (await store_batch(sessions, again, PipelineConfig(), T0 + 3600)).events == 0
    async with sessions() as session:
        rows = (
            (await session.execute(select(Event).where(col(Event.device_id) == device).order_by(col(Event.type))))
            .scalars()
            .all()
        )
    assert [(event.type, event.attributes) for event in rows] == [
        ("alarm", {"alarm": "sos"}),
        ("deviceOnline", {}),
        ("deviceOverspeed", {"speed": 60.0, "speedLimit": 50.0}),
        ("ignitionOn", {}),
    ]


def test_a_geofences_lower_speed_limit_wins_and_the_event_names_it() -> None:
    from tracker_jobs.events.geofences import GeofenceIndex, parse_area
    from tracker_jobs.positions.geofencing import DetectGeofences, Geofencing
    from tracker_jobs.positions.pipeline import PIPELINE, run_pipeline

    school = parse_area("POLYGON ((52.0005 12.99, 52.0005 13.01, 52.003 13.01, 52.003 12.99, 52.0005 12.99))")
    geofencing = Geofencing(GeofenceIndex({9: school}), [(1, 9)], {9: 30.0})
    rows = [at(0, 40), at(10, 40), at(20, 40), at(30, 40)]  # 52.000 .. 52.003: the school zone from 10 s
    steps = (*PIPELINE, DetectGeofences(geofencing), DetectOverspeed({1: 50.0}, geofence_limits={9: 30.0}))
    result = run_pipeline(rows, {}, PipelineConfig(), T0 + 3600, steps=steps)
    assert [
        (event.type, event.position.fix_time, event.attributes)
        for event in result.events
        if event.type == "deviceOverspeed"
    ] == [("deviceOverspeed", T0 + 10, {"speed": 40.0, "speedLimit": 30.0, "geofenceId": 9})]


def test_maintenance_is_due_each_time_its_value_crosses_start_plus_a_period() -> None:
    from tracker_jobs.positions.detectors import DetectMaintenance, MaintenanceItem

    item = MaintenanceItem(5, 1, "Oil", "hours", start=100.0, period=50.0)
    rows = [at(10 * i, hours=hours) for i, hours in enumerate([90, 99, 100, 120, 149, 151, 260, 261])]
    result = run(DetectMaintenance((item,)), rows, {1: stored(-10, hours=80)})
    (due,) = result.events
    # 100 reached at 100; 150 between 149 and 151; 200 and 250 both passed between 151 and 260: one event.
    assert due.rows.tolist() == [2, 5, 6]
    assert due.attributes == [
        {"name": "Oil", "type": "hours", "due": 100.0},
        {"name": "Oil", "type": "hours", "due": 150.0},
        {"name": "Oil", "type": "hours", "due": 250.0},
    ]
    assert due.subject is not None
    assert due.subject.tolist() == [5, 5, 5]


async def test_maintenance_by_odometer_through_the_store(sessions: async_sessionmaker[AsyncSession]) -> None:
    device = await add_device(sessions, "serviced")
    item = await add_maintenance(sessions, device, name="Tyres", type="totalDistance", start=1000.0, period=1000.0)
    track = [at(10 * i, 20, device) for i in range(30)]  # 0.001 degree (111 m) every 10 s: 3.2 km
    await store_batch(sessions, track, PipelineConfig(), T0 + 7200)
    async with sessions() as session:
        due = (
            (
                await session.execute(
                    select(Event).where(col(Event.device_id) == device, col(Event.type) == "maintenance")
                )
            )
            .scalars()
            .all()
        )
    assert [(event.maintenance_id, event.attributes["due"]) for event in due] == [
        (item.id, 1000.0),
        (item.id, 2000.0),
        (item.id, 3000.0),
    ]


def test_derived_speeds_from_the_pipeline_need_two_positions_over_the_limit() -> None:
    from tracker_jobs.positions.pipeline import PIPELINE, run_pipeline

    def unreported(second: float, lat: float) -> PositionRecord:
        return PositionRecord(device_id=1, fix_time=T0 + second, latitude=lat, longitude=13.0)

    # One 10 s hop of 500 m (97 kn) between two fixes at rest: a GPS glitch, not overspeed.
    spike = [unreported(0, 52.0), unreported(10, 52.0045), unreported(20, 52.0045)]
    steps = (*PIPELINE, DetectOverspeed({1: 50.0}))
    events = run_pipeline(spike, {}, PipelineConfig(), T0 + 3600, steps=steps).events
    assert [e.type for e in events] == []
    sustained = [
        unreported(0, 52.0),
        unreported(10, 52.0045),
        unreported(20, 52.009),
    ]  # fresh: the run fills records in
    events = run_pipeline(sustained, {}, PipelineConfig(), T0 + 3600, steps=steps).events
    assert [(e.type, e.position.fix_time) for e in events] == [("deviceOverspeed", T0 + 20)]


def test_a_derived_overspeed_episode_begun_at_the_stored_position_gets_its_event_in_the_next_batch() -> None:
    begun = stored(0, speedComputed=True, overspeedSince=T0)
    rows = [at(10, 80), at(20, 80)]
    batch = Batch.from_rows(rows, {1: begun}, T0 + 3600)
    batch.sparse["speedComputed"] = (np.array([0, 1]), True)
    assert events(DetectOverspeed({1: 50.0})(batch, PipelineConfig()))["deviceOverspeed"] == [0]


async def test_the_overspeed_settings_reach_the_detector(sessions: async_sessionmaker[AsyncSession]) -> None:
    from tracker_jobs.core.config import load_settings
    from tracker_jobs.positions.pipeline import PipelineConfig as Config

    env = {"TRACKER_OVERSPEED_MULTIPLIER": "1.2", "TRACKER_OVERSPEED_MINIMAL_DURATION": "15"}
    config = Config.from_settings(load_settings(env))
    assert (config.overspeed_multiplier, config.overspeed_minimal_s) == (1.2, 15.0)
    device = await add_device(sessions, "tolerant")
    async with transaction(sessions) as session:
        found = await session.get(Device, device)
        assert found is not None
        found.speed_limit = 50.0
    # 55 kn is under 50 x 1.2; 65 kn for 20 s passes both the limit and the minimal duration.
    track = [at(0, 55, device), at(10, 65, device), at(20, 65, device), at(30, 65, device)]
    await store_batch(sessions, track, config, T0 + 3600)
    async with sessions() as session:
        rows = (
            (
                await session.execute(
                    select(Event).where(col(Event.device_id) == device, col(Event.type) == "deviceOverspeed")
                )
            )
            .scalars()
            .all()
        )
    assert [event.event_time.timestamp() for event in rows] == [T0 + 30]
