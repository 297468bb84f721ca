"""Membership of many points at once (`GeofenceIndex.members`), checked property-style against the
straightforward way: per position, each geofence linked to its device, tested alone. Random scenes of
polygons, circles and corridors, some widened by their hysteresis as the position path widens them,
random links, points inside, outside and on the corners; both ways the index looks links up (table
and keys), both ways it numbers grid cells (dense and by key), and small or large geofence ids."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support.geofences import inside_by_loop, near
from tracker_jobs.core.errors import FieldError
from tracker_jobs.events import geofences
from tracker_jobs.events.geofences import METRES_PER_DEGREE, GeofenceIndex, Links, Shape, grown, parse_area

KINDS = ("polygon", "circle", "corridor")
metres = st.floats(-6000, 6000, allow_nan=False)


def loop_members(
    shapes: dict[int, Shape], links: list[tuple[int, int]], lat: list[float], lon: list[float], device: list[int]
) -> list[tuple[int, int]]:
    linked = set(links)
    return [
        (i, gid)
        for i in range(len(lat))
        for gid in sorted(shapes)
        if (device[i], gid) in linked and inside_by_loop(shapes[gid], lat[i], lon[i])
    ]


@st.composite
def scenes(draw: st.DrawFn) -> tuple[float, float, list[tuple[str, dict[str, float]]]]:
    """A center and 1-10 geofences as Traccar WKT (with their attributes) within a few km of it."""
    lat0 = draw(st.floats(-70, 70, allow_nan=False))
    lon0 = draw(st.floats(-179, 179, allow_nan=False))
    scale = math.cos(math.radians(lat0))

    def at(east: float, north: float) -> str:
        return f"{lat0 + north / METRES_PER_DEGREE!r} {lon0 + east / (METRES_PER_DEGREE * scale)!r}"

    areas = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(KINDS))
        east, north = draw(metres), draw(metres)
        attributes: dict[str, float] = {}
        if kind == "polygon":
            corners = draw(st.integers(3, 24))
            radii = draw(st.lists(st.floats(20, 3000), min_size=corners, max_size=corners))
            jitter = draw(st.lists(st.floats(0.05, 0.95), min_size=corners, max_size=corners))
            angles = [(k + j) * 2 * math.pi / corners for k, j in enumerate(jitter)]
            ring = [at(east + r * math.sin(a), north + r * math.cos(a)) for r, a in zip(radii, angles, strict=True)]
            area = f"POLYGON (({', '.join([*ring, ring[0]])}))"
        elif kind == "circle":
            area = f"CIRCLE ({at(east, north)}, {draw(st.floats(1, 5000))!r})"
        else:
            steps = draw(st.lists(st.tuples(st.floats(-2000, 2000), st.floats(-2000, 2000)), min_size=1, max_size=6))
            line = [(east, north)]
            for step_east, step_north in steps:
                line.append((line[-1][0] + step_east, line[-1][1] + step_north))
            area = f"LINESTRING ({', '.join(at(e, n) for e, n in line)})"
            attributes["polylineDistance"] = draw(st.floats(1, 1500))
        hysteresis = draw(st.sampled_from([0.0, 0.0, 3.0, 60.0, 700.0]))
        if hysteresis:
            attributes["hysteresis"] = hysteresis
        areas.append((area, attributes))
    return lat0, lon0, areas


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scene=scenes(),
    offsets=st.lists(st.tuples(metres, metres), max_size=20),
    nearby=st.lists(
        st.tuples(st.integers(0, 9), st.floats(0, 1), st.floats(-1.5, 1.5), st.floats(-1.5, 1.5)), max_size=40
    ),
    corners=st.integers(0, 8),
    devices=st.integers(1, 4),
    link_bits=st.lists(st.booleans(), min_size=40, max_size=40),
    large_ids=st.booleans(),
    table=st.booleans(),
    dense=st.booleans(),
    widened=st.booleans(),
    data=st.data(),
)
def test_members_equal_the_loop_over_each_position_and_its_linked_geofences(
    scene: tuple[float, float, list[tuple[str, dict[str, float]]]],
    offsets: list[tuple[float, float]],
    nearby: list[tuple[int, float, float, float]],
    corners: int,
    devices: int,
    link_bits: list[bool],
    large_ids: bool,
    table: bool,
    dense: bool,
    widened: bool,
    data: st.DataObject,
) -> None:
    lat0, lon0, areas = scene
    parsed = {}
    for number, (area, attributes) in enumerate(areas, 1):
        try:
            shape = parse_area(area, attributes)
        except FieldError:  # rarely, a drawn ring crosses itself (corners at one angle)
            continue
        gid = number * 97_000_003 % (1 << 31) if large_ids else number  # too large to number an array by
        if widened:  # the index of the geofences with hysteresis, as the position path builds it
            if attributes.get("hysteresis"):
                parsed[gid] = grown(shape, attributes["hysteresis"])
        else:
            parsed[gid] = shape
    assume(parsed)
    scale = math.cos(math.radians(lat0))
    lat = [lat0 + north / METRES_PER_DEGREE for _, north in offsets]
    lon = [lon0 + east / (METRES_PER_DEGREE * scale) for east, _ in offsets]
    chosen = list(parsed.values())
    for which, t, u, v in nearby:
        y, x = near(chosen[which % len(chosen)], t, u, v)
        lat.append(y)
        lon.append(x)
    for shape in chosen[:corners]:  # on a border, or a circle's or a line's start
        if shape.kind == "polygon":
            corner = shapely.get_coordinates(shape.geometry)[0]
            lat.append(float(corner[1]))
            lon.append(float(corner[0]))
        else:
            lat.append(shape.origin[0])
            lon.append(shape.origin[1])
    device = [data.draw(st.integers(1, devices)) for _ in lat]
    pairs = [(d, gid) for d in range(1, devices + 1) for gid in sorted(parsed)]
    links = [pair for pair, bit in zip(pairs, link_bits, strict=False) if bit]

    with mock.patch.object(geofences, "_DENSE_CELLS", geofences._DENSE_CELLS if dense else 0):
        index = GeofenceIndex(parsed)
    if not table:
        index.TABLE_LIMIT = 0
    expected = loop_members(parsed, links, lat, lon, device)
    arrays = np.array(lat), np.array(lon), np.array(device, dtype=np.int64)
    linked = Links.of(links) if dense else links  # `members` takes either
    points, ids = index.members(*arrays, linked)
    assert list(zip(points.tolist(), ids.tolist(), strict=True)) == expected
    again = index.members(*arrays, linked)  # the links' table, kept from the first lookup
    assert [a.tolist() for a in again] == [points.tolist(), ids.tolist()]


def test_points_far_away_or_not_numbers_are_in_no_geofence() -> None:
    index = GeofenceIndex({1: parse_area("CIRCLE (52.0 13.0, 500)"), 2: parse_area("CIRCLE (-52.0 -13.0, 500)")})
    lat = np.array([52.0, np.nan, 52.0, 1e300, -52.0, 89.99, 52.0])
    lon = np.array([13.0, 13.0, np.inf, 13.0, -13.0, 179.99, 13.0])
    device = np.array([1, 1, 1, 1, 1, 1, 2], dtype=np.int64)
    points, ids = index.members(lat, lon, device, Links.of([(1, 1), (1, 2)]))
    assert list(zip(points.tolist(), ids.tolist(), strict=True)) == [(0, 1), (4, 2)]


def test_geofences_of_every_size_from_metres_to_a_continent() -> None:
    areas = {
        1: "CIRCLE (48.0 11.0, 0.5)",
        2: "CIRCLE (48.0 11.0, 1000000)",
        3: "POLYGON ((47.5 10.5, 47.5 11.5, 48.5 11.5, 48.5 10.5, 47.5 10.5))",
        4: "LINESTRING (48.0 11.0, 48.0 11.00001)",
    }
    index = GeofenceIndex({gid: parse_area(area) for gid, area in areas.items()})
    assert len({level.cell for level in index.grid.levels}) == 4  # one grid level each
    lat, lon = np.array([48.0, 48.000001, 56.0, 48.0]), np.array([11.0, 11.000005, 11.0, 21.0])
    links = Links.of([(7, gid) for gid in areas])
    points, ids = index.members(lat, lon, np.full(4, 7, dtype=np.int64), links)
    expected = loop_members(
        {gid: parse_area(area) for gid, area in areas.items()},
        [(7, gid) for gid in areas],
        lat.tolist(),
        lon.tolist(),
        [7] * 4,
    )
    assert list(zip(points.tolist(), ids.tolist(), strict=True)) == expected
    assert {(0, 1), (0, 3), (1, 4), (2, 2), (3, 2)} <= set(expected)  # the data covers each size
