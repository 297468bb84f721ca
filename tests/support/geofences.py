"""The straightforward way to tell whether a point is in a geofence (one point, one shape, as Traccar
defines it), for checking the vectorised index against; and points about a geofence to test with."""

from __future__ import annotations

import math

import numpy as np
import shapely

from tracker_jobs.core.geo import haversine_m
from tracker_jobs.events.geofences import METRES_PER_DEGREE, Shape


def inside_by_loop(shape: Shape, lat: float, lon: float) -> bool:
    """One point against one geofence."""
    if shape.kind == "polygon":
        alone = shapely.from_wkb(shapely.to_wkb(shape.geometry))  # a copy the index has not prepared
        return bool(shapely.contains(alone, shapely.Point(lon, lat)))
    if shape.kind == "circle":
        center = (np.array([shape.origin[0]]), np.array([shape.origin[1]]))
        return float(haversine_m(*center, np.array([lat]), np.array([lon]))[0]) <= shape.radius_m
    lat0, lon0 = shape.origin
    x = (lon - lon0) * METRES_PER_DEGREE * math.cos(math.radians(lat0))
    y = (lat - lat0) * METRES_PER_DEGREE
    return bool(shapely.distance(shape.geometry, shapely.Point(x, y)) <= shape.radius_m)


def near(shape: Shape, t: float, u: float, v: float) -> tuple[float, float]:
    """A point about the geofence, (u, v) in units of its size: inside for |(u, v)| < 1 or so."""
    if shape.kind == "polygon":
        west, south, east, north = shapely.bounds(shape.geometry).tolist()
        return (south + north) / 2 + v * (north - south) / 2, (west + east) / 2 + u * (east - west) / 2
    lat0, lon0 = shape.origin
    if shape.kind == "circle":
        x, y = u * shape.radius_m, v * shape.radius_m
    else:  # along the line, then off it by up to a few widths
        assert isinstance(shape.geometry, shapely.LineString)
        along = shapely.get_coordinates(shapely.line_interpolate_point(shape.geometry, t, normalized=True))[0]
        x, y = along[0] + u * shape.radius_m, along[1] + v * shape.radius_m
    return lat0 + y / METRES_PER_DEGREE, lon0 + x / (METRES_PER_DEGREE * math.cos(math.radians(lat0)))
