"""Geofences: Traccar's WKT read into shapes, and which geofences each of many points lies in.

Traccar writes coordinates latitude first: `POLYGON ((lat lon, lat lon, ...))`, `CIRCLE (lat lon,
radius_m)`, `LINESTRING (lat lon, ...)` (a corridor `polylineDistance` metres either side of the line).
Shapely keeps x = longitude, y = latitude.

Membership of a batch's points, with no loop over points or geofences in Python: one STRtree over
every geofence's bounding shape (in degrees, widened by its radius or corridor width) proposes
(point, geofence) pairs at once; the pairs are narrowed to the geofences linked to each point's
device, then decided exactly, each kind in one vectorised call: polygons with `contains_xy`, circles
by the haversine distance in metres, corridors by the distance in metres to the line, in a local
metric frame around the corridor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from tracker_jobs.core.errors import FieldError
from tracker_jobs.core.geo import EARTH_RADIUS_M, haversine_m

MAX_VERTICES = 10_000
DEFAULT_CORRIDOR_M = 25.0  # Traccar's polylineDistance when the geofence sets none
METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180.0
_SHAPE = re.compile(r"^\s*(POLYGON|CIRCLE|LINESTRING)\s*\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR = re.compile(rf"^\s*({_NUMBER})\s+({_NUMBER})\s*$")

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Shape:
    """A geofence's area: `kind` polygon, circle or corridor. A polygon's `geometry` is in (lon, lat)
    degrees; a circle is its center (`origin`, lat and lon) and `radius_m`; a corridor's line is kept
    in metres around its first vertex (`origin`), `radius_m` its half-width."""

    kind: str
    geometry: shapely.Geometry | None = None  # a polygon's, or a corridor's line in metres
    radius_m: float = 0.0
    origin: tuple[float, float] = (0.0, 0.0)  # (lat, lon): a circle's center, a corridor's local frame

    def envelope(self) -> shapely.Geometry:
        """A shape in degrees that holds every point of the area: what the tree searches."""
        if self.kind == "polygon" and self.geometry is not None:
            return self.geometry
        lat, lon = self.origin
        lon0, lat0, lon1, lat1 = (lon, lat, lon, lat) if self.kind == "circle" else _degrees_bounds(self)
        widen_lat = self.radius_m / METRES_PER_DEGREE
        farthest = min(max(abs(lat0), abs(lat1)) + widen_lat, 89.9)  # a degree of longitude is shortest there
        widen_lon = widen_lat / math.cos(math.radians(farthest))
        return shapely.box(lon0 - widen_lon, lat0 - widen_lat, lon1 + widen_lon, lat1 + widen_lat)


MAX_HYSTERESIS_M = 10_000.0


def hysteresis_m(attributes: Mapping[str, Any] | None) -> float:
    """A geofence's `hysteresis` attribute (m, 0 when it sets none): a device inside stays inside until
    it is this far outside the border, so one parked on the border does not flap in and out."""
    value = (attributes or {}).get("hysteresis", 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_HYSTERESIS_M:
        raise FieldError("attributes.hysteresis", f"must be a number of metres from 0 to {MAX_HYSTERESIS_M:,.0f}")
    return float(value)


def grown(shape: Shape, metres: float) -> Shape:
    """The shape widened by `metres` on every side (a polygon buffered in a local metric frame)."""
    if shape.kind != "polygon":
        return Shape(shape.kind, shape.geometry, shape.radius_m + metres, shape.origin)
    coordinates = shapely.get_coordinates(shape.geometry)
    lon0, lat0 = coordinates[0]
    x, y = _local_metres(coordinates[:, 1], coordinates[:, 0], lat0, lon0)
    widened = shapely.get_coordinates(shapely.buffer(shapely.Polygon(np.column_stack([x, y])), metres))
    lat = lat0 + widened[:, 1] / METRES_PER_DEGREE
    lon = lon0 + widened[:, 0] / (METRES_PER_DEGREE * math.cos(math.radians(lat0)))
    return Shape("polygon", shapely.Polygon(np.column_stack([lon, lat])))


def parse_area(area: str, attributes: Mapping[str, Any] | None = None) -> Shape:
    """Traccar's WKT as a Shape; a FieldError on `area` naming what is wrong."""
    match = _SHAPE.match(area) if len(area) < 64 * MAX_VERTICES else None
    if match is None:
        raise FieldError(
            "area", "must be POLYGON ((lat lon, ...)), CIRCLE (lat lon, radius) or LINESTRING (lat lon, ...)"
        )
    kind, body = match[1].upper(), match[2].strip()
    if kind == "CIRCLE":
        center, _, radius = body.partition(",")
        lat, lon = _point(center)
        try:
            radius_m = float(radius)
        except ValueError:
            raise FieldError("area", "a circle is CIRCLE (lat lon, radius in metres)") from None
        if not 0 < radius_m <= 1_000_000:
            raise FieldError("area", "a circle's radius must be more than 0 and at most 1,000,000 m")
        return Shape("circle", radius_m=radius_m, origin=(lat, lon))
    if kind == "POLYGON":
        if not (body.startswith("(") and body.endswith(")")) or "(" in body[1:]:
            raise FieldError("area", "a polygon is POLYGON ((lat lon, ...)): one ring, no holes")
        points = _points(body[1:-1])
        if len(points) < 4 or points[0] != points[-1]:
            raise FieldError("area", "a polygon's ring must be closed (its last point its first) and have 3 corners")
        polygon = shapely.Polygon([(lon, lat) for lat, lon in points])
        if not polygon.is_valid:
            raise FieldError("area", f"the polygon is not valid: {shapely.is_valid_reason(polygon)[:80]}")
        return Shape("polygon", polygon)
    points = _points(body)
    if len(points) < 2:
        raise FieldError("area", "a line needs at least 2 points")
    width = (attributes or {}).get("polylineDistance", DEFAULT_CORRIDOR_M)
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0 < width <= 100_000:
        raise FieldError("attributes.polylineDistance", "must be a number of metres, more than 0")
    origin = points[0]
    x, y = _local_metres(np.array([p[0] for p in points]), np.array([p[1] for p in points]), *origin)
    return Shape("corridor", shapely.LineString(np.column_stack([x, y])), float(width), origin)


def _point(text: str) -> tuple[float, float]:
    match = _PAIR.match(text)
    if match is None:
        raise FieldError("area", f"expected 'latitude longitude', got {text.strip()[:40]!r}")
    lat, lon = float(match[1]), float(match[2])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise FieldError("area", f"latitude must be within ±90 and longitude within ±180, got {lat} {lon}")
    return lat, lon


def _points(text: str) -> list[tuple[float, float]]:
    parts = text.split(",")
    if len(parts) > MAX_VERTICES:
        raise FieldError("area", f"at most {MAX_VERTICES} points")
    return [_point(part) for part in parts]


def _local_metres(lat: Floats, lon: Floats, lat0: float, lon0: float) -> tuple[Floats, Floats]:
    """Points in metres east and north of (lat0, lon0): exact enough for a corridor's few kilometres."""
    x = (lon - lon0) * METRES_PER_DEGREE * math.cos(math.radians(lat0))
    y = (lat - lat0) * METRES_PER_DEGREE
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _degrees_bounds(shape: Shape) -> tuple[float, float, float, float]:
    """A corridor's line's bounds back in degrees: (min lon, min lat, max lon, max lat)."""
    coordinates = shapely.get_coordinates(shape.geometry)
    lat = shape.origin[0] + coordinates[:, 1] / METRES_PER_DEGREE
    lon = shape.origin[1] + coordinates[:, 0] / (METRES_PER_DEGREE * math.cos(math.radians(shape.origin[0])))
    return float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())


class GeofenceIndex:
    """Every geofence of the engine, ready to answer which of them hold each of many points."""

    def __init__(self, geofences: Mapping[int, Shape]) -> None:
        self.ids = np.array(sorted(geofences), dtype=np.int64)
        shapes = [geofences[int(i)] for i in self.ids]
        self.kinds = np.array([shape.kind for shape in shapes])
        self.geometries = np.array([shape.geometry for shape in shapes], dtype=object)
        self.radius_m = np.array([shape.radius_m for shape in shapes], dtype=np.float64)
        self.origin = np.array([shape.origin for shape in shapes], dtype=np.float64).reshape(len(shapes), 2)
        self.tree = shapely.STRtree([shape.envelope() for shape in shapes])

    def __len__(self) -> int:
        return len(self.ids)

    def members(
        self, latitude: Floats, longitude: Floats, device: Ints, links: Sequence[tuple[int, int]]
    ) -> tuple[Ints, Ints]:
        """(point index, geofence id) of every point inside a geofence linked to its device, as two
        arrays sorted by point, then geofence id. `links`: (device id, geofence id) pairs."""
        empty = np.zeros(0, dtype=np.int64)
        if not len(self.ids) or not len(latitude) or not links:
            return empty, empty
        points, slots = self.tree.query(shapely.points(longitude, latitude), predicate="intersects")
        points, slots = points.astype(np.int64), slots.astype(np.int64)
        linked = np.array(links, dtype=np.int64).reshape(-1, 2)
        wanted = _pair_keys(linked[:, 0], linked[:, 1])
        keep = np.isin(_pair_keys(device[points], self.ids[slots]), wanted)
        points, slots = points[keep], slots[keep]
        inside = np.zeros(len(points), dtype=np.bool_)
        kinds = self.kinds[slots]
        for kind, decide in (
            ("polygon", self._in_polygons),
            ("circle", self._in_circles),
            ("corridor", self._in_corridors),
        ):
            chosen = np.flatnonzero(kinds == kind)
            if len(chosen):
                inside[chosen] = decide(latitude[points[chosen]], longitude[points[chosen]], slots[chosen])
        points, ids = points[inside], self.ids[slots[inside]]
        order = np.lexsort((ids, points))
        return points[order], ids[order]

    def _in_polygons(self, lat: Floats, lon: Floats, slots: Ints) -> npt.NDArray[np.bool_]:
        return np.asarray(shapely.contains_xy(self.geometries[slots], lon, lat), dtype=np.bool_)

    def _in_circles(self, lat: Floats, lon: Floats, slots: Ints) -> npt.NDArray[np.bool_]:
        distance = haversine_m(self.origin[slots, 0], self.origin[slots, 1], lat, lon)
        return np.asarray(distance <= self.radius_m[slots], dtype=np.bool_)

    def _in_corridors(self, lat: Floats, lon: Floats, slots: Ints) -> npt.NDArray[np.bool_]:
        lat0, lon0 = self.origin[slots, 0], self.origin[slots, 1]
        x = (lon - lon0) * METRES_PER_DEGREE * np.cos(np.radians(lat0))
        y = (lat - lat0) * METRES_PER_DEGREE
        distance = shapely.distance(self.geometries[slots], shapely.points(x, y))
        return np.asarray(distance <= self.radius_m[slots], dtype=np.bool_)


def _pair_keys(devices: Ints, geofences: Ints) -> Ints:
    """One integer per (device, geofence) pair (both ids fit in 31 bits)."""
    keys: Ints = (devices.astype(np.int64) << 31) | geofences.astype(np.int64)
    return keys
