"""Geofences: Traccar's WKT read into shapes, and which geofences each of many points lies in.

Traccar writes coordinates latitude first: `POLYGON ((lat lon, lat lon, ...))`, `CIRCLE (lat lon,
radius_m)`, `LINESTRING (lat lon, ...)` (a corridor `polylineDistance` metres either side of the line).
Shapely keeps x = longitude, y = latitude.

Membership of a batch's points, with no loop over points or geofences in Python (`GeofenceIndex`): a
grid over every geofence's bounding box (in degrees, widened by its radius or corridor width) proposes
(point, geofence) pairs at once with array arithmetic alone; the pairs are narrowed to the geofences
linked to each point's device (`Links`, a table lookup), then the few left are decided exactly, each
kind in one vectorised call: polygons with `contains_xy` on prepared geometries, circles by the
haversine distance in metres, corridors by the distance in metres to the line, in a local metric frame
around the corridor. The exact tests are those of the straightforward loop, so the answer is the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
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


class Links:
    """(device id, geofence id) links as `GeofenceIndex.members` looks them up: sorted unique int64
    keys (device << 31 | geofence). Made once per batch and handed to every lookup of that batch."""

    __slots__ = ("devices", "geofences", "keys")

    def __init__(self, devices: npt.ArrayLike, geofences: npt.ArrayLike) -> None:
        keys = _pair_keys(np.asarray(devices, dtype=np.int64), np.asarray(geofences, dtype=np.int64))
        if not np.all(keys[1:] > keys[:-1]):  # as the database hands them, sorted: no sort needed
            keys = np.unique(keys)
        self.keys: Ints = keys
        self.devices: Ints = keys >> _SHIFT  # sorted, as the keys are
        self.geofences: Ints = keys & _LOW

    @classmethod
    def of(cls, pairs: Iterable[tuple[int, int]]) -> Links:
        linked = np.array(list(pairs), dtype=np.int64).reshape(-1, 2)
        return cls(linked[:, 0], linked[:, 1])

    def __len__(self) -> int:
        return len(self.keys)


class _Level:
    """One level of `_Grid`: square cells `cell` degrees wide, each with the slots of the geofences
    filed under it (`entries[first[i]:first[i + 1]]`). Its cells are numbered densely over the
    rectangle they span when that is small (a point's cell found by arithmetic), else by sorted
    cell key (found with `searchsorted`)."""

    def __init__(self, cell: float, x: Ints, y: Ints, slot: Ints) -> None:
        self.cell = cell
        self.x0, self.y0 = int(x.min()), int(y.min())
        self.wide, self.high = int(x.max()) - self.x0 + 1, int(y.max()) - self.y0 + 1
        self.dense = self.wide * self.high <= min(_DENSE_CELLS, max(1 << 16, _DENSE_PER_ENTRY * len(slot)))
        keys = (y - self.y0) * self.wide + (x - self.x0) if self.dense else _cell_keys(x, y)
        order = np.lexsort((slot, keys))
        keys, self.entries = keys[order], slot[order].astype(np.int32)
        if self.dense:
            self.keys = np.zeros(0, dtype=np.int64)
            counts = np.bincount(keys, minlength=self.wide * self.high)
        else:
            self.keys, counts = np.unique(keys, return_counts=True)
        self.first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)

    def lookup(self, lat: Floats, lon: Floats) -> tuple[Ints, Ints, Ints]:
        """(which of the points fall in a cell with entries, that cell's first entry, its entry count)."""
        x = np.floor(lon / self.cell).astype(np.int64)
        y = np.floor(lat / self.cell).astype(np.int64)
        if self.dense:
            x -= self.x0
            y -= self.y0
            hit = np.flatnonzero((x >= 0) & (x < self.wide) & (y >= 0) & (y < self.high))
            at = y[hit] * self.wide + x[hit]
        else:
            key = _cell_keys(x, y)
            at = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
            hit = np.flatnonzero(self.keys[at] == key)
            at = at[hit]
        start = self.first[at]
        count = self.first[at + 1] - start
        filled = np.flatnonzero(count)
        return hit[filled], start[filled], count[filled]


class _Grid:
    """Which geofences' bounding boxes may hold a point, as arrays: a hierarchy of square grids in
    degrees, cells `_MIN_CELL * _STEP ** level` wide. Each geofence is filed under every cell its box
    touches at the one level where the box spans at most `_SPAN` cells a side; a point's candidates
    are the entries of its cell at each level in use (arithmetic or one `searchsorted` per level, no
    GEOS call). A point inside a box always falls in one of the box's cells (floor is monotonic), so
    the candidates hold every geofence that can hold the point, and some more the exact test drops."""

    def __init__(self, bounds: Floats) -> None:
        self.levels: list[_Level] = []
        if not len(bounds):
            return
        size = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
        level = np.ceil(np.log(np.maximum(size / (_SPAN * _MIN_CELL), 1.0)) / math.log(_STEP)).astype(np.int64)
        for value in np.unique(level).tolist():
            slots = np.flatnonzero(level == value)
            cell = _MIN_CELL * _STEP ** float(value)
            x0, y0 = np.floor(bounds[slots, 0] / cell), np.floor(bounds[slots, 1] / cell)
            wide = (np.floor(bounds[slots, 2] / cell) - x0 + 1).astype(np.int64)
            high = (np.floor(bounds[slots, 3] / cell) - y0 + 1).astype(np.int64)
            per_slot = wide * high
            k = _ranks(per_slot)  # each geofence's cells, row by row
            width = np.repeat(wide, per_slot)
            x = np.repeat(x0.astype(np.int64), per_slot) + k % width
            y = np.repeat(y0.astype(np.int64), per_slot) + k // width
            self.levels.append(_Level(cell, x, y, np.repeat(slots, per_slot)))

    def candidates(self, latitude: Floats, longitude: Floats, points: Ints) -> tuple[Ints, Ints]:
        """(point, slot) of every geofence whose cells hold one of `points` (indexes into the coordinates)."""
        lat, lon = latitude[points], longitude[points]
        found_points, found_slots = [], []
        for level in self.levels:
            hit, start, count = level.lookup(lat, lon)
            ends = np.cumsum(count)
            found_points.append(np.repeat(points[hit], count))
            found_slots.append(
                level.entries[np.repeat(start - ends + count, count) + np.arange(ends[-1] if len(ends) else 0)]
            )
        if not found_points:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(found_points), np.concatenate(found_slots).astype(np.int64)


_SHIFT = 31  # (device, geofence) pairs as one int64: both ids fit in 31 bits
_LOW = (1 << _SHIFT) - 1
_MIN_CELL = 1e-6  # degrees: the finest grid level's cell (about 0.1 m)
_STEP = 4  # each grid level's cells are this many times wider than the level's below
_SPAN = 16  # a geofence's box spans at most this many cells a side at its level
_DENSE_CELLS = 1 << 21  # a level's cells numbered densely up to so many (4 bytes each)...
_DENSE_PER_ENTRY = 64  # ... and up to so many per entry of the level
_COORDINATE_LIMIT = 1000.0  # degrees: a point farther out is in no geofence (its cell numbers stay in 31 bits)


class GeofenceIndex:
    """Every geofence of the engine, ready to answer which of them hold each of many points.

    `members` finds candidate (point, geofence) pairs from a grid over the bounding boxes, keeps those
    whose geofence is linked to the point's device (a boolean table of link devices by geofence,
    made once per `Links`), then decides the few left exactly, each kind in one vectorised call
    over prepared geometries. No loop over points or geofences in Python."""

    TABLE_LIMIT = 1 << 22  # cells (bytes) of the links table; beyond, links are looked up by key instead

    def __init__(self, geofences: Mapping[int, Shape]) -> None:
        self.ids = np.array(sorted(geofences), dtype=np.int64)
        shapes = [geofences[int(i)] for i in self.ids]
        self.kinds = np.array([shape.kind for shape in shapes])
        self.is_polygon = self.kinds == "polygon"
        self.is_circle = self.kinds == "circle"
        self.is_corridor = self.kinds == "corridor"
        self.geometries = np.array([shape.geometry for shape in shapes], dtype=object)
        shapely.prepare(self.geometries[~self.is_circle])  # a prepared polygon answers contains_xy faster
        self.radius_m = np.array([shape.radius_m for shape in shapes], dtype=np.float64)
        self.origin = np.array([shape.origin for shape in shapes], dtype=np.float64).reshape(len(shapes), 2)
        bounds = shapely.bounds(np.array([shape.envelope() for shape in shapes], dtype=object))
        self.grid = _Grid(np.asarray(bounds, dtype=np.float64).reshape(len(shapes), 4))
        self._slot_of: Ints | None = None  # by geofence id, when the ids are small enough
        if len(self.ids) and self.ids[-1] < max(1 << 20, 8 * len(self.ids)) and self.ids[0] >= 0:
            self._slot_of = np.full(int(self.ids[-1]) + 1, -1, dtype=np.int32)
            self._slot_of[self.ids] = np.arange(len(self.ids))
        self._table: tuple[Links, Ints, npt.NDArray[np.bool_] | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def members(
        self, latitude: Floats, longitude: Floats, device: Ints, links: Links | Sequence[tuple[int, int]]
    ) -> tuple[Ints, Ints]:
        """(point index, geofence id) of every point inside a geofence linked to its device, as two
        arrays sorted by point, then geofence id. `links`: the (device id, geofence id) pairs, best
        as `Links` made once for every lookup of a batch."""
        empty = np.zeros(0, dtype=np.int64)
        if not isinstance(links, Links):
            links = Links.of(links)
        if not len(self.ids) or not len(latitude) or not len(links):
            return empty, empty
        lat, lon = np.asarray(latitude, dtype=np.float64), np.asarray(longitude, dtype=np.float64)
        device = np.asarray(device, dtype=np.int64)
        devices, table = self._links_table(links)
        row = np.minimum(np.searchsorted(devices, device), len(devices) - 1)
        with np.errstate(invalid="ignore"):  # NaN is no coordinate: in no geofence
            placed = (np.abs(lat) <= _COORDINATE_LIMIT) & (np.abs(lon) <= _COORDINATE_LIMIT)
        usable = np.flatnonzero((devices[row] == device) & placed)
        points, slots = self.grid.candidates(lat, lon, usable)
        if table is not None:
            keep = table[row[points], slots]
        else:
            keep = _contains(links.keys, _pair_keys(device[points], self.ids[slots]))
        points, slots = points[keep], slots[keep]
        inside = np.zeros(len(points), dtype=np.bool_)
        for kind, decide in (
            (self.is_polygon, self._in_polygons),
            (self.is_circle, self._in_circles),
            (self.is_corridor, self._in_corridors),
        ):
            chosen = np.flatnonzero(kind[slots])
            if len(chosen):
                inside[chosen] = decide(lat[points[chosen]], lon[points[chosen]], slots[chosen])
        points, slots = points[inside], slots[inside]
        order = np.argsort(points * len(self.ids) + slots)  # slots are in id order
        return points[order], self.ids[slots[order]]

    def _links_table(self, links: Links) -> tuple[Ints, npt.NDArray[np.bool_] | None]:
        """The links' devices (sorted) and, when small enough, the table: linked[device row, slot].
        Kept for the last `Links` seen (a batch looks up the same links more than once)."""
        if self._table is not None and self._table[0] is links:
            return self._table[1], self._table[2]
        change = links.devices[1:] != links.devices[:-1]  # the devices are sorted
        devices = links.devices[np.concatenate([[True], change])] if len(links) else links.devices
        row = np.concatenate([[0], np.cumsum(change)])
        table = None
        if len(devices) * len(self.ids) <= self.TABLE_LIMIT:
            slot = self._slots(links.geofences)
            known = slot >= 0
            table = np.zeros((len(devices), len(self.ids)), dtype=np.bool_)
            table[row[known], slot[known]] = True
        self._table = (links, devices, table)
        return devices, table

    def _slots(self, ids: Ints) -> Ints:
        """Each geofence id's slot in this index, -1 for one not in it."""
        if self._slot_of is not None:
            inside = (ids >= 0) & (ids < len(self._slot_of))
            slots: Ints = np.full(len(ids), -1, dtype=np.int64)
            slots[inside] = self._slot_of[ids[inside]]
            return slots
        at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[at] == ids, at, -1)

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
    keys: Ints = (devices.astype(np.int64) << _SHIFT) | geofences.astype(np.int64)
    return keys


def _contains(sorted_keys: Ints, keys: Ints) -> npt.NDArray[np.bool_]:
    """Whether each of `keys` is in `sorted_keys` (sorted, not empty)."""
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found: npt.NDArray[np.bool_] = sorted_keys[at] == keys
    return found


def _cell_keys(x: Ints, y: Ints) -> Ints:
    """One integer per grid cell of a level (cell numbers are within ±2**31 once clipped)."""
    keys: Ints = (y << 32) + x
    return keys


def _ranks(counts: Ints) -> Ints:
    """0, 1, ..., n - 1 for each n of `counts`, one after another."""
    total = int(counts.sum())
    ranks: Ints = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return ranks
