"""Geofences: Traccar's WKT read and refused with the problem named; membership of many points at
once, checked against the straightforward loop over every point and every geofence."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import shapely

from tests.support.geofences import inside_by_loop
from tracker_jobs.core.errors import FieldError
from tracker_jobs.events.geofences import METRES_PER_DEGREE, GeofenceIndex, Shape, parse_area

SQUARE = "POLYGON ((52.0 13.0, 52.0 13.1, 52.1 13.1, 52.1 13.0, 52.0 13.0))"


def test_the_three_shapes_read_latitude_first() -> None:
    polygon = parse_area(SQUARE)
    assert polygon.kind == "polygon"
    assert shapely.bounds(polygon.geometry).tolist() == [13.0, 52.0, 13.1, 52.1]  # x is the longitude
    circle = parse_area("CIRCLE (52.5 13.4, 250)")
    assert (circle.kind, circle.origin, circle.radius_m) == ("circle", (52.5, 13.4), 250.0)
    corridor = parse_area("LINESTRING (52.5 13.4, 52.5 13.5)", {"polylineDistance": 40})
    assert (corridor.kind, corridor.radius_m, corridor.origin) == ("corridor", 40.0, (52.5, 13.4))
    assert shapely.length(corridor.geometry) == pytest.approx(0.1 * METRES_PER_DEGREE * math.cos(math.radians(52.5)))


@pytest.mark.parametrize(
    ("area", "problem"),
    [
        ("SQUARE (1 2)", "must be POLYGON"),
        ("POLYGON ((52 13, 52 14, 53 14, 53 13))", "must be closed"),
        ("POLYGON ((52 13, 52 14, 52 13))", "must be closed"),
        ("POLYGON ((91 13, 52 14, 53 14, 91 13))", "latitude must be within"),
        ("POLYGON ((52 13, 53 14, 52 14, 53 13, 52 13))", "not valid: Self-intersection"),
        ("POLYGON ((52 13, 52 14, 53 14, 52 13), (1 1, 1 2, 2 2, 1 1))", "no holes"),
        ("CIRCLE (52 13, 0)", "radius must be more than 0"),
        ("CIRCLE (52 13, -5)", "radius must be more than 0"),
        ("CIRCLE (52 13)", "CIRCLE (lat lon, radius"),
        ("CIRCLE (52 north, 10)", "expected 'latitude longitude'"),
        ("LINESTRING (52 13)", "at least 2 points"),
        ("POLYGON ((" + ", ".join(["52 13"] * 10_001) + "))", "at most 10000 points"),
    ],
)
def test_bad_areas_are_refused_naming_the_problem(area: str, problem: str) -> None:
    with pytest.raises(FieldError) as refused:
        parse_area(area)
    assert refused.value.field == "area"
    assert problem in refused.value.problem


def test_a_corridor_needs_a_positive_width() -> None:
    with pytest.raises(FieldError) as refused:
        parse_area("LINESTRING (52 13, 52 14)", {"polylineDistance": 0})
    assert refused.value.field == "attributes.polylineDistance"


def _random_geofences(rng: np.random.Generator, count: int) -> dict[int, Shape]:
    shapes: dict[int, Shape] = {}
    while len(shapes) < count:
        geofence_id = len(shapes) + 1
        lat, lon = 52 + rng.uniform(-0.2, 0.2), 13 + rng.uniform(-0.3, 0.3)
        kind = rng.choice(["polygon", "circle", "corridor"])
        if kind == "circle":
            shapes[geofence_id] = parse_area(f"CIRCLE ({lat} {lon}, {rng.uniform(50, 3000)})")
        elif kind == "corridor":
            points = ", ".join(f"{lat + k * 0.01} {lon + rng.uniform(-0.01, 0.01) + k * 0.005}" for k in range(5))
            shapes[geofence_id] = parse_area(f"LINESTRING ({points})", {"polylineDistance": rng.uniform(10, 500)})
        else:
            corners = int(rng.integers(3, 40))
            angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
            radii = rng.uniform(0.005, 0.05, corners)
            ring = [f"{lat + r * np.sin(a)} {lon + r * np.cos(a)}" for a, r in zip(angles, radii, strict=True)]
            with contextlib.suppress(FieldError):  # rarely, two corners at one angle cross: draw again
                shapes[geofence_id] = parse_area(f"POLYGON (({', '.join([*ring, ring[0]])}))")
    return shapes


@pytest.mark.parametrize("seed", range(3))
def test_membership_equals_the_loop_over_points_and_geofences(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shapes = _random_geofences(rng, 60)
    count = 3000
    latitude = 52 + rng.uniform(-0.25, 0.25, count)
    longitude = 13 + rng.uniform(-0.35, 0.35, count)
    device = rng.integers(1, 6, count).astype(np.int64)
    links = [(d, g) for d in range(1, 6) for g in shapes if rng.random() < 0.6]
    points, ids = GeofenceIndex(shapes).members(latitude, longitude, device, links)
    linked = set(links)
    expected = [
        (i, g)
        for i in range(count)
        for g in sorted(shapes)
        if (int(device[i]), g) in linked and inside_by_loop(shapes[g], latitude[i], longitude[i])
    ]
    assert len(expected) > 100  # the data has members to find
    assert list(zip(points.tolist(), ids.tolist(), strict=True)) == expected


def test_no_geofences_no_links_no_points() -> None:
    none = np.zeros(0, dtype=np.int64)
    index = GeofenceIndex({7: parse_area(SQUARE)})
    lat, lon, device = np.array([52.05]), np.array([13.05]), np.array([1])
    assert [a.tolist() for a in index.members(lat, lon, device, [(1, 7)])] == [[0], [7]]
    assert [a.tolist() for a in index.members(lat, lon, device, [])] == [[], []]
    assert [a.tolist() for a in index.members(lat, lon, device, [(2, 7)])] == [[], []]
    assert [a.tolist() for a in GeofenceIndex({}).members(lat, lon, device, [(1, 7)])] == [[], []]
    nowhere = none.astype(np.float64)
    assert [a.tolist() for a in index.members(nowhere, nowhere, none, [(1, 7)])] == [[], []]
