"""The geofence step (`DetectGeofences`), checked property-style against the straightforward way: each
device's positions walked one by one in time, each position tested against each linked geofence
alone, its set compared with the set before (Traccar's rule). Random geofences (polygons, circles,
corridors, some with hysteresis), devices, links, stored newest positions (some sets naming geofences
no longer linked), late positions and dropped ones."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support.geofences import inside_by_loop, near
from tracker_jobs.events.geofences import METRES_PER_DEGREE, GeofenceIndex, Shape, grown, parse_area
from tracker_jobs.positions.geofencing import DetectGeofences, Geofencing
from tracker_jobs.positions.pipeline import Batch, DeviceState, PipelineConfig
from tracker_jobs.positions.record import PositionRecord

T0 = 1_767_225_600.0
LAT0, LON0 = 52.0, 13.0
SCALE = METRES_PER_DEGREE * math.cos(math.radians(LAT0))


@st.composite
def geofences(draw: st.DrawFn) -> tuple[Shape, float]:
    """A shape within a few km of (LAT0, LON0) and its hysteresis (m, 0 for none)."""
    east, north = draw(st.floats(-3000, 3000)), draw(st.floats(-3000, 3000))

    def at(x: float, y: float) -> str:
        return f"{LAT0 + y / METRES_PER_DEGREE!r} {LON0 + x / SCALE!r}"

    kind = draw(st.sampled_from(["polygon", "circle", "corridor"]))
    attributes: dict[str, float] = {}
    if kind == "polygon":
        corners = draw(st.integers(3, 12))
        radii = draw(st.lists(st.floats(50, 2000), min_size=corners, max_size=corners))
        angles = [(k + 0.5) * 2 * math.pi / corners for k in range(corners)]
        ring = [at(east + r * math.sin(a), north + r * math.cos(a)) for r, a in zip(radii, angles, strict=True)]
        area = f"POLYGON (({', '.join([*ring, ring[0]])}))"
    elif kind == "circle":
        area = f"CIRCLE ({at(east, north)}, {draw(st.floats(20, 3000))!r})"
    else:
        bends = draw(st.lists(st.tuples(st.floats(-1500, 1500), st.floats(-1500, 1500)), min_size=1, max_size=4))
        line = [(east, north)]
        for x, y in bends:
            line.append((line[-1][0] + x, line[-1][1] + y))
        area = f"LINESTRING ({', '.join(at(x, y) for x, y in line)})"
        attributes["polylineDistance"] = draw(st.floats(5, 500))
    return parse_area(area, attributes), draw(st.sampled_from([0.0, 20.0, 300.0, 1000.0]))


def expected_step(
    batch: Batch, shapes: dict[int, Shape], widened: dict[int, Shape], links: set[tuple[int, int]]
) -> tuple[dict[int, list[int]], list[tuple[int, int]], list[tuple[int, int]]]:
    """(geofence ids by row, entries, exits) the straightforward way."""
    alive = batch.alive
    sets: dict[int, list[int]] = {}
    entries, exits = [], []
    previous: dict[int, set[int]] = {}  # by device: its set at its previous alive row, else its stored one
    for row in range(len(batch)):
        if not batch.kept[row]:
            continue
        device, lat, lon = int(batch.device[row]), float(batch.latitude[row]), float(batch.longitude[row])
        inner = {g for g, shape in shapes.items() if (device, g) in links and inside_by_loop(shape, lat, lon)}
        if not alive[row]:  # late: its geofences, no event
            if inner:
                sets[row] = sorted(inner)
            continue
        if device not in previous:
            state = batch.states.get(device)
            previous[device] = {g for g in (state.geofence_ids if state else ()) if (device, g) in links}
        before = previous[device]
        now = {g for g in inner if g not in widened}
        for g, shape in widened.items():  # inside from a position inside, while inside the widened area
            if (device, g) in links and inside_by_loop(shape, lat, lon) and (g in inner or g in before):
                now.add(g)
        if now:
            sets[row] = sorted(now)
        entries += [(row, g) for g in sorted(now - before)]
        exits += [(row, g) for g in sorted(before - now)]
        previous[device] = now
    return sets, entries, exits


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    fences=st.lists(geofences(), min_size=1, max_size=4),
    devices=st.integers(1, 3),
    link_bits=st.lists(st.booleans(), min_size=12, max_size=12),
    positions=st.lists(
        st.tuples(
            st.integers(1, 3),  # device
            st.integers(0, 40),  # second
            st.integers(0, 3),  # about which geofence
            st.floats(0, 1),
            st.floats(-1.6, 1.6),
            st.floats(-1.6, 1.6),
            st.booleans(),  # dropped by an earlier step
        ),
        max_size=40,
    ),
    stored=st.lists(st.tuples(st.integers(0, 40), st.lists(st.integers(1, 5), max_size=4)), min_size=3, max_size=3),
    has_state=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_the_step_equals_walking_each_device_position_by_position(
    fences: list[tuple[Shape, float]],
    devices: int,
    link_bits: list[bool],
    positions: list[tuple[int, int, int, float, float, float, bool]],
    stored: list[tuple[int, list[int]]],
    has_state: list[bool],
) -> None:
    shapes = {gid: shape for gid, (shape, _) in enumerate(fences, 1)}
    widened = {gid: grown(shape, metres) for gid, (shape, metres) in enumerate(fences, 1) if metres}
    pairs = [(d, g) for d in range(1, devices + 1) for g in shapes]
    links = [pair for pair, bit in zip(pairs, link_bits, strict=False) if bit]
    records, dropped = [], []
    for device, second, which, t, u, v, drop in positions:
        lat, lon = near(shapes[which % len(shapes) + 1], t, u, v)
        records.append(
            PositionRecord(device_id=min(device, devices), fix_time=T0 + second, latitude=lat, longitude=lon)
        )
        dropped.append(drop)
    assume(records)
    states = {
        d: DeviceState(
            fix_time=T0 + second, latitude=LAT0, longitude=LON0, odometer=0.0, attributes={"geofenceIds": ids}
        )
        for d, (second, ids), present in zip(range(1, 4), stored, has_state, strict=True)
        if present
    }
    batch = Batch.from_rows(records, states, T0 + 3600)
    order = np.lexsort(([r.fix_time for r in records], [r.device_id for r in records]))
    batch.kept = ~np.array(dropped)[order]
    fencing = Geofencing(
        GeofenceIndex(shapes), links, {}, GeofenceIndex(widened) if widened else None, frozenset(widened)
    )
    result = DetectGeofences(fencing)(batch, PipelineConfig())

    sets, entries, exits = expected_step(batch, shapes, widened, set(links))
    rows, values = result.sparse["geofenceIds"]
    assert dict(zip(rows.tolist(), values, strict=True)) == sets
    found = {d.type: list(zip(d.rows.tolist(), np.asarray(d.subject).tolist(), strict=True)) for d in result.events}
    assert found == {"geofenceEnter": entries, "geofenceExit": exits}
