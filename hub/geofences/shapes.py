"""Geofences as shapes in the metric plane, ready for evaluation.

Three kinds, each measured the way that is exact and cheap for it:

- **Area** (Polygon, MultiPolygon): the polygon in the plane, prepared, and its boundary,
  prepared. GeoJSON edges are straight in lon/lat, Mercator edges are straight in the plane;
  edges are first cut into pieces of at most `MAX_EDGE_DEG` so the two agree to centimetres.
- **Circle** (Point + radius): depth is the radius minus the distance to the centre, computed
  from lon/lat directly (`circle_distances_m`), with no polygon approximation at all.
- **Corridor** (LineString + width): depth is half the width minus the distance to the
  centre line, measured in the plane and scaled at the fix.

`FenceIndex` derives the rest for all fences at once (shapely's functions are vectorised):
an `outline` polygon that contains each fence, for the grid; and for areas and corridors an
eroded (by the enter margin) and a dilated (by the exit margin) version, for crossings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Final, cast

import numpy as np
import shapely
from numpy.typing import NDArray

from db.geofences.validation import EARTH_RADIUS_M, to_shapely
from hub.geofences.projection import metres_per_unit, to_plane

if TYPE_CHECKING:
    from db.geofences.model import Geofence

# Longest edge kept as drawn, in degrees (0.01 deg is about 1.1 km). A straight edge in
# lon/lat and one in the plane part by up to R * tan(lat) * dlat^2 / 8: 1.2 m for a 10 km
# north-south edge at 31 N, about 1 cm once edges are cut to 1 km.
MAX_EDGE_DEG: Final = 0.01
# How far a circle's polygon may stray from the true circle, in metres. The polygon only
# bounds the circle for the index (depths and crossings are solved exactly); half a metre
# is below GPS noise.
CIRCLE_TOLERANCE_M: Final = 0.5
# Fewest vertices of a circle's polygon, so small circles stay round on a map.
MIN_CIRCLE_VERTICES: Final = 32
# Precision of an area's inscribed disc, as a share of its size: the disc only spares exact
# tests, so a rough one (a little small) does.
INSCRIBED_TOLERANCE: Final = 0.01
# Segments per quarter circle for corridor ends and margin buffers: 0.5% of the radius.
QUAD_SEGS: Final = 8


class ShapeKind(IntEnum):
    """How a fence is measured."""

    AREA = 0
    CIRCLE = 1
    CORRIDOR = 2


GeomArray = NDArray[np.object_]


def _circle_vertices(radius_m: NDArray[np.float64]) -> NDArray[np.int64]:
    # A regular n-gon strays r * (1 - cos(pi / n)) ~ r * pi^2 / (2 n^2) from its circle.
    wanted = np.ceil(np.pi * np.sqrt(radius_m / (2 * CIRCLE_TOLERANCE_M)))
    return np.maximum(MIN_CIRCLE_VERTICES, wanted).astype(np.int64)


def circle_polygons(
    lon: NDArray[np.float64], lat: NDArray[np.float64], radius_m: NDArray[np.float64]
) -> GeomArray:
    """Polygons in the plane that contain the circles of `radius_m` metres about (lon, lat).

    Their vertices are true destination points on the sphere, pushed out so that the
    edges, not the vertices, touch the circle. All circles at once.
    """
    count = _circle_vertices(radius_m)
    owner = np.repeat(np.arange(len(count)), count)
    step = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    bearing = 2 * np.pi * step / count[owner]
    # Circumscribed: every edge's midpoint at the radius, so the polygon holds the circle.
    reach = (radius_m / np.cos(np.pi / count) / EARTH_RADIUS_M)[owner]
    lat1, lon1 = np.radians(lat)[owner], np.radians(lon)[owner]
    lat2 = np.arcsin(np.sin(lat1) * np.cos(reach) + np.cos(lat1) * np.sin(reach) * np.cos(bearing))
    lon2 = lon1 + np.arctan2(
        np.sin(bearing) * np.sin(reach) * np.cos(lat1), np.cos(reach) - np.sin(lat1) * np.sin(lat2)
    )
    x, y = to_plane(np.degrees(lon2), np.degrees(lat2))
    rings = shapely.linearrings(np.column_stack([x, y]), indices=owner)
    return cast("GeomArray", shapely.polygons(rings))


def circle_distances_m(
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
    centre_lon: NDArray[np.float64],
    centre_lat: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Metres from each position to its circle's centre: equirectangular about the midpoint.

    Within 0.01% of the great circle for the 50 km circles validation allows.
    """
    mid = np.radians((lat + centre_lat) / 2)
    dx = np.radians(lon - centre_lon) * np.cos(mid)
    dy = np.radians(lat - centre_lat)
    distance: NDArray[np.float64] = EARTH_RADIUS_M * np.hypot(dx, dy)
    return distance


def point_to_segment(  # noqa: PLR0913, PLR0917 - three points, as coordinates
    px: NDArray[np.float64],
    py: NDArray[np.float64],
    ax: NDArray[np.float64],
    ay: NDArray[np.float64],
    bx: NDArray[np.float64],
    by: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Distance from each point p to its segment ab, as GEOS measures it.

    The same operations in the same order as GEOS's `Distance::pointToSegment`, so the
    same doubles as `shapely.distance` to a line (its smallest over the line's segments),
    for a fraction of the cost: no Point per fix, no call per pair.
    """
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    # p - a, computed once: GEOS's a - p is its exact negative, and the sign of its cross
    # term is dropped (by the absolute value) anyway.
    u, v = px - ax, py - ay
    with np.errstate(invalid="ignore", divide="ignore"):
        along = (u * dx + v * dy) / length2
        across = np.abs((u * dy - v * dx) / length2) * np.sqrt(length2)
    to_a = np.sqrt(u * u + v * v)
    u, v = px - bx, py - by
    to_b = np.sqrt(u * u + v * v)
    distance: NDArray[np.float64] = np.where(
        ((dx == 0) & (dy == 0)) | (along <= 0), to_a, np.where(along >= 1, to_b, across)
    )
    return distance


def _to_plane_coords(coords: NDArray[np.float64]) -> NDArray[np.float64]:
    x, y = to_plane(coords[:, 0], coords[:, 1])
    return np.column_stack([x, y])


@dataclass(frozen=True, slots=True)
class FenceShape:
    """One fence's own geometry in the plane; `FenceIndex` derives the rest for all at once."""

    fence: Geofence
    kind: ShapeKind
    # Ground metres per plane unit at the fence's centre, for margins in the plane.
    scale: float
    # Areas: the polygon. Corridors: the centre line. Circles: None (they are analytic).
    geometry: shapely.Geometry | None
    # Circles: the centre in degrees. Circles and corridors: the radius or half width.
    centre_lon: float = math.nan
    centre_lat: float = math.nan
    reach_m: float = math.nan
    # Corridors: the fewest ground metres per plane unit along the line, so that a buffer
    # in plane units holds the corridor everywhere.
    least_scale: float = math.nan


def build_shape(fence: Geofence) -> FenceShape:
    """A fence's own geometry in the plane (the fence was validated on construction)."""
    geometry = fence.geometry
    if fence.is_circle:
        lon, lat = geometry["coordinates"]
        assert fence.radius_m is not None
        return FenceShape(
            fence,
            ShapeKind.CIRCLE,
            math.cos(math.radians(lat)),
            None,
            centre_lon=lon,
            centre_lat=lat,
            reach_m=fence.radius_m,
        )
    drawn = to_shapely(geometry)
    assert not isinstance(drawn, shapely.Point)
    _, lat_min, _, lat_max = drawn.bounds
    scale = math.cos(math.radians((lat_min + lat_max) / 2))
    plane = shapely.transform(shapely.segmentize(drawn, MAX_EDGE_DEG), _to_plane_coords)
    if isinstance(drawn, shapely.LineString):
        assert fence.width_m is not None
        lats = shapely.get_coordinates(drawn)[:, 1]
        return FenceShape(
            fence,
            ShapeKind.CORRIDOR,
            scale,
            plane,
            reach_m=fence.width_m / 2,
            least_scale=float(metres_per_unit(lats).min()),
        )
    return FenceShape(fence, ShapeKind.AREA, scale, plane)
