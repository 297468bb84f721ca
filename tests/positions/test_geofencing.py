"""Geofences in the position path: the step alone on hand-made positions, then through the store on
both databases: every position carries its geofenceIds, enter and exit are stored once, and a
device continues from its stored newest position's set."""

from __future__ import annotations

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from tests.support.factories import add_device
from tracker_jobs.core.db import transaction
from tracker_jobs.events.geofences import GeofenceIndex, parse_area
from tracker_jobs.events.models import DeviceGeofence, Event, Geofence
from tracker_jobs.positions.geofencing import DetectGeofences, Geofencing, ShapeCache
from tracker_jobs.positions.models import Position
from tracker_jobs.positions.pipeline import PIPELINE, Batch, DeviceState, PipelineConfig, run_pipeline
from tracker_jobs.positions.record import PositionRecord
from tracker_jobs.positions.service import store_batch

T0 = 1_767_225_600.0
# A square of about 1.1 km around (52.005, 13.005); the device drives north through it.
SQUARE = "POLYGON ((52.0 13.0, 52.0 13.01, 52.01 13.01, 52.01 13.0, 52.0 13.0))"
INSIDE, OUTSIDE = 52.005, 51.99


def at(device: int, second: float, lat: float) -> PositionRecord:
    return PositionRecord(
        device_id=device, fix_time=T0 + second, latitude=lat, longitude=13.005, speed=10.0, course=0.0
    )


def detect(rows: list[PositionRecord], states: dict[int, DeviceState] | None = None) -> tuple[Batch, DetectGeofences]:
    step = DetectGeofences(Geofencing(GeofenceIndex({7: parse_area(SQUARE)}), [(1, 7), (2, 7)]))
    return Batch.from_rows(rows, states or {}, T0 + 3600), step


def test_enter_and_exit_where_the_set_changes_and_every_position_carries_its_geofences() -> None:
    rows = [at(1, 0, OUTSIDE), at(1, 60, INSIDE), at(1, 120, INSIDE), at(1, 180, 52.02)]
    rows.append(at(2, 0, INSIDE))  # device 2 starts inside: it was outside, as nothing is stored
    batch, step = detect(rows)
    result = step(batch, PipelineConfig())
    rows_inside, ids = result.sparse["geofenceIds"]
    assert rows_inside.tolist() == [1, 2, 4]
    assert ids == [[7], [7], [7]]
    by_type = {detected.type: (detected.rows.tolist(), detected.subject) for detected in result.events}
    assert by_type["geofenceEnter"][0] == [1, 4]
    assert by_type["geofenceExit"][0] == [3]
    assert np.asarray(by_type["geofenceExit"][1]).tolist() == [7]


def test_a_device_continues_from_its_stored_set_and_late_positions_make_no_event() -> None:
    inside_before = DeviceState(
        fix_time=T0 + 30, latitude=INSIDE, longitude=13.005, odometer=0.0, attributes={"geofenceIds": [7]}
    )
    rows = [at(1, 0, OUTSIDE), at(1, 60, INSIDE), at(1, 120, OUTSIDE)]  # the first is late (before T0 + 30)
    batch, step = detect(rows, {1: inside_before})
    result = step(batch, PipelineConfig())
    assert batch.late.tolist() == [True, False, False]
    by_type = {detected.type: detected.rows.tolist() for detected in result.events}
    assert by_type == {"geofenceEnter": [], "geofenceExit": [2]}  # still inside at 60 s: no enter
    left = detect([at(1, 60, OUTSIDE)], {1: inside_before})
    assert {d.type: d.rows.tolist() for d in left[1](left[0], PipelineConfig()).events}["geofenceExit"] == [0]


def test_the_pipeline_puts_geofence_ids_into_the_positions_and_hands_on_the_events() -> None:
    rows = [at(1, 0, OUTSIDE), at(1, 60, INSIDE), at(1, 120, OUTSIDE)]
    _, step = detect(rows)
    result = run_pipeline(rows, {}, PipelineConfig(), T0 + 3600, steps=(*PIPELINE, step))
    assert [record.attributes.get("geofenceIds") for record in result.kept] == [None, [7], None]
    assert [(event.type, event.position.fix_time, event.subject) for event in result.events] == [
        ("geofenceEnter", T0 + 60, 7),
        ("geofenceExit", T0 + 120, 7),
    ]


async def test_events_are_stored_once_with_their_position_and_place(sessions: async_sessionmaker[AsyncSession]) -> None:
    device = await add_device(sessions, "fenced")
    async with transaction(sessions) as session:
        geofence = Geofence(name="depot", area=SQUARE)
        session.add(geofence)
        await session.flush()
        assert geofence.id is not None
        session.add(DeviceGeofence(device_id=device, geofence_id=geofence.id))
    shapes = ShapeCache()
    first = [at(device, 0, OUTSIDE), at(device, 60, INSIDE)]
    assert (await store_batch(sessions, first, PipelineConfig(), T0 + 3600, shapes)).events == 2  # and online
    assert (
        await store_batch(
            sessions, [at(device, 0, OUTSIDE), at(device, 60, INSIDE)], PipelineConfig(), T0 + 3600, shapes
        )
    ).events == 0
    # The next batch starts from the stored newest position's set: leaving makes an exit.
    assert (await store_batch(sessions, [at(device, 120, OUTSIDE)], PipelineConfig(), T0 + 3600, shapes)).events == 1
    async with sessions() as session:
        events = (
            (
                await session.execute(
                    select(Event)
                    .where(col(Event.device_id) == device, col(Event.type).startswith("geofence"))
                    .order_by(col(Event.event_time))
                )
            )
            .scalars()
            .all()
        )
        positions = {
            position.id: position
            for position in (await session.execute(select(Position).where(col(Position.device_id) == device))).scalars()
        }
    assert [(event.type, event.geofence_id, event.subject) for event in events] == [
        ("geofenceEnter", geofence.id, geofence.id),
        ("geofenceExit", geofence.id, geofence.id),
    ]
    entered = positions[events[0].position_id]
    assert (entered.latitude, entered.attributes["geofenceIds"]) == (INSIDE, [geofence.id])
    assert (events[0].latitude, events[0].longitude) == (INSIDE, 13.005)
    assert positions[events[1].position_id].fix_time.timestamp() == T0 + 120


def test_hysteresis_keeps_a_device_on_the_border_inside_until_it_is_that_far_out() -> None:
    from tracker_jobs.events.geofences import grown

    depot = parse_area(SQUARE)  # its southern border is latitude 52.0
    index = GeofenceIndex({7: depot})
    fencing = Geofencing(index, [(1, 7)], grown=GeofenceIndex({7: grown(depot, 50.0)}), sticky=frozenset({7}))
    step = DetectGeofences(fencing)
    just_out, far_out = 52.0 - 20 / 111_320, 52.0 - 80 / 111_320  # 20 m and 80 m south of the border
    track = [at(1, 0, OUTSIDE), at(1, 60, just_out), at(1, 120, INSIDE), at(1, 180, just_out), at(1, 240, INSIDE)]
    track += [at(1, 300, just_out), at(1, 360, far_out), at(1, 420, just_out)]
    batch = Batch.from_rows(track, {}, T0 + 3600)
    result = step(batch, PipelineConfig())
    by_type = {detected.type: detected.rows.tolist() for detected in result.events}
    # In at 120 s (inside the area, not merely near it); the wobbles 20 m out stay inside; out at 80 m.
    assert by_type == {"geofenceEnter": [2], "geofenceExit": [6]}
    assert result.sparse["geofenceIds"][0].tolist() == [2, 3, 4, 5]
    # The stored newest position was inside: a batch starting 20 m out is still inside.
    stored_inside = DeviceState(
        fix_time=T0 - 60, latitude=INSIDE, longitude=13.005, odometer=0.0, attributes={"geofenceIds": [7]}
    )
    carried = step(
        Batch.from_rows([at(1, 0, just_out), at(1, 60, far_out)], {1: stored_inside}, T0 + 3600), PipelineConfig()
    )
    assert {d.type: d.rows.tolist() for d in carried.events} == {"geofenceEnter": [], "geofenceExit": [1]}


def test_a_hysteresis_that_is_not_a_distance_is_refused() -> None:
    import pytest

    from tracker_jobs.core.errors import FieldError
    from tracker_jobs.events.geofences import hysteresis_m

    assert hysteresis_m({"hysteresis": 25}) == 25.0
    assert hysteresis_m({}) == 0.0
    for bad in (-1, "far", True, 1e9):
        with pytest.raises(FieldError):
            hysteresis_m({"hysteresis": bad})


async def test_a_geofence_deleted_while_a_device_is_inside_makes_no_exit_and_stops_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    device = await add_device(sessions, "left-behind")
    async with transaction(sessions) as session:
        gone, kept = Geofence(name="gone", area=SQUARE), Geofence(name="kept", area="CIRCLE (10 10, 100)")
        session.add_all([gone, kept])
        await session.flush()
        assert gone.id is not None
        assert kept.id is not None
        session.add_all(
            [
                DeviceGeofence(device_id=device, geofence_id=gone.id),
                DeviceGeofence(device_id=device, geofence_id=kept.id),
            ]
        )
    shapes = ShapeCache()
    await store_batch(sessions, [at(device, 0, INSIDE)], PipelineConfig(), T0 + 3600, shapes)
    async with transaction(sessions) as session:
        await session.delete(await session.get(Geofence, gone.id))
    after = await store_batch(sessions, [at(device, 60, OUTSIDE)], PipelineConfig(), T0 + 3600, shapes)
    assert after.stored == 1
    async with sessions() as session:
        exits = (await session.execute(select(Event).where(col(Event.type) == "geofenceExit"))).scalars().all()
    assert exits == []
