"""GeoJSON validation for geofences: the shapes the API, the CLI and the hub all accept.

A geofence is a Polygon or MultiPolygon as drawn, a circle (a Point with `radius_m`) or a
corridor (a LineString with `width_m`). Anything else, or anything a hub could not evaluate
sensibly, is refused with a `GeometryError` whose `code` is stable (API clients branch on
it) and whose message says what is wrong and where (`coordinates[0][3]`).

Checks run cheapest first, so hostile input costs little: the structure and the vertex
count are checked before shapely builds anything. Sizes are measured in metres on a local
equirectangular plane about the shape's centre, which is within 0.5% at the sizes allowed
here: good enough for limits that only keep out mistakes.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

import numpy as np
import shapely

if TYPE_CHECKING:
    from collections.abc import Mapping

    from numpy.typing import NDArray

# Mean Earth radius (IUGG), the same sphere hub.filters measures jumps on.
EARTH_RADIUS_M: Final = 6_371_008.8
METRES_PER_DEGREE: Final = EARTH_RADIUS_M * math.pi / 180

# The hub projects onto Web Mercator, which ends at 85.05 degrees; no car is shared further
# north or south than that.
MAX_ABS_LATITUDE: Final = 85.0
# All rings or parts together. A district boundary traced from OpenStreetMap has a few
# thousand vertices; at GPS scale (5-15 m) more detail only costs evaluation time and row size.
MAX_VERTICES: Final = 10_000
# Widest east-west or north-south. Shanghai municipality is about 120 x 100 km, so any city's
# service area fits, and the hub's projection stays within 0.5% over it (docs/geofences.md).
MAX_EXTENT_M: Final = 200_000.0
# More than Shanghai municipality (6,340 km2); swapped lon/lat or a world polygon is not.
MAX_AREA_M2: Final = 10_000e6
# 10 x 10 m: a smaller fence is inside a consumer GPS's error (5-15 m) and could only flap.
MIN_AREA_M2: Final = 100.0
# Circles: below 10 m the same GPS error applies; beyond 50 km, draw the area as a polygon.
MIN_RADIUS_M: Final = 10.0
MAX_RADIUS_M: Final = 50_000.0
# Corridors (full width): a two-lane road is about 7 m, but a corridor narrower than 10 m
# is inside GPS noise; wider than 5 km it is an area, not a corridor.
MIN_WIDTH_M: Final = 10.0
MAX_WIDTH_M: Final = 5_000.0


class GeometryErrorCode(StrEnum):
    """Why a geofence's shape was refused: stable, machine-readable codes."""

    NOT_AN_OBJECT = "geometry_not_an_object"
    UNSUPPORTED_TYPE = "unsupported_geometry_type"
    INVALID_COORDINATES = "invalid_coordinates"
    POSITION_OUT_OF_RANGE = "position_out_of_range"
    RING_TOO_SHORT = "ring_too_short"
    RING_NOT_CLOSED = "ring_not_closed"
    LINE_TOO_SHORT = "line_too_short"
    TOO_MANY_VERTICES = "too_many_vertices"
    INVALID_GEOMETRY = "invalid_geometry"
    TOO_LARGE = "too_large"
    TOO_SMALL = "too_small"
    RADIUS_REQUIRED = "radius_required"
    RADIUS_NOT_ALLOWED = "radius_not_allowed"
    RADIUS_OUT_OF_RANGE = "radius_out_of_range"
    WIDTH_REQUIRED = "width_required"
    WIDTH_NOT_ALLOWED = "width_not_allowed"
    WIDTH_OUT_OF_RANGE = "width_out_of_range"
    MARGIN_TOO_LARGE = "margin_too_large"


class GeometryError(ValueError):
    """A geofence's shape was refused; `code` is stable, `message` is for people."""

    def __init__(self, code: GeometryErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ShapeFacts(NamedTuple):
    """What validation measured, for callers that want to show or check it."""

    vertices: int
    width_m: float
    height_m: float
    area_m2: float
    # Radius of the largest circle that fits inside: how deep a vehicle can ever be.
    inner_radius_m: float


SUPPORTED_TYPES: Final = ("Polygon", "MultiPolygon", "Point", "LineString")

Position = list[float]


def _fail(code: GeometryErrorCode, message: str) -> GeometryError:
    return GeometryError(code, message)


def _position(value: object, where: str) -> Position:
    """One [lon, lat] (an altitude is accepted and dropped: fences are 2-D)."""
    if not isinstance(value, list | tuple) or len(value) not in (2, 3):
        raise _fail(
            GeometryErrorCode.INVALID_COORDINATES,
            f"{where} must be a position [longitude, latitude], got {_brief(value)}",
        )
    lon, lat = value[0], value[1]
    for number in (lon, lat):
        # bool is an int to Python, but true is not a longitude.
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise _fail(
                GeometryErrorCode.INVALID_COORDINATES,
                f"{where} must hold numbers, got {_brief(value)}",
            )
        if not math.isfinite(number):
            raise _fail(GeometryErrorCode.INVALID_COORDINATES, f"{where} is not finite")
    if not -180.0 <= lon <= 180.0:
        raise _fail(
            GeometryErrorCode.POSITION_OUT_OF_RANGE,
            f"{where}: longitude {lon} is outside -180..180 (is it [longitude, latitude]?)",
        )
    if not -MAX_ABS_LATITUDE <= lat <= MAX_ABS_LATITUDE:
        raise _fail(
            GeometryErrorCode.POSITION_OUT_OF_RANGE,
            f"{where}: latitude {lat} is outside -{MAX_ABS_LATITUDE:g}..{MAX_ABS_LATITUDE:g}",
        )
    return [float(lon), float(lat)]


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _list(value: object, where: str, what: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _fail(
            GeometryErrorCode.INVALID_COORDINATES, f"{where} must be {what}, got {_brief(value)}"
        )
    return list(value)


class _Counter:
    """Counts vertices while parsing, failing as soon as the limit is passed."""

    def __init__(self) -> None:
        self.vertices = 0

    def add(self, count: int) -> None:
        self.vertices += count
        if self.vertices > MAX_VERTICES:
            raise _fail(
                GeometryErrorCode.TOO_MANY_VERTICES,
                f"more than {MAX_VERTICES:,} vertices; simplify the shape "
                "(detail finer than GPS accuracy does not help)",
            )


def _line(value: object, where: str, counter: _Counter) -> list[Position]:
    positions = _list(value, where, "a list of positions")
    counter.add(len(positions))
    return [_position(p, f"{where}[{n}]") for n, p in enumerate(positions)]


def _ring(value: object, where: str, counter: _Counter) -> list[Position]:
    ring = _line(value, where, counter)
    if len(ring) < 4:
        raise _fail(
            GeometryErrorCode.RING_TOO_SHORT,
            f"{where} has {len(ring)} positions; a linear ring needs at least 4 "
            "(three corners and the first one again)",
        )
    if ring[0] != ring[-1]:
        raise _fail(
            GeometryErrorCode.RING_NOT_CLOSED,
            f"{where} is not closed: its last position {ring[-1]} must repeat the first {ring[0]}",
        )
    return ring


def _polygon(value: object, where: str, counter: _Counter) -> list[list[Position]]:
    rings = _list(value, where, "a list of linear rings")
    if not rings:
        raise _fail(GeometryErrorCode.INVALID_COORDINATES, f"{where} has no rings")
    return [_ring(r, f"{where}[{n}]", counter) for n, r in enumerate(rings)]


def normalize_geometry(geometry: object) -> dict[str, Any]:
    """Check a GeoJSON geometry's structure; return it canonical.

    Canonical: only `type` and `coordinates`, every number a float, altitudes dropped. Raises
    GeometryError. Validity and size need the radius or width too: see `check_shape`.
    """
    if not isinstance(geometry, dict):
        raise _fail(
            GeometryErrorCode.NOT_AN_OBJECT,
            f"a geometry must be a GeoJSON object, got {type(geometry).__name__}",
        )
    kind = geometry.get("type")
    if kind not in SUPPORTED_TYPES:
        hint = " (pass the feature's geometry, not the feature)" if kind == "Feature" else ""
        raise _fail(
            GeometryErrorCode.UNSUPPORTED_TYPE,
            f"geometry type {_brief(kind)} is not one of {', '.join(SUPPORTED_TYPES)}{hint}",
        )
    if "coordinates" not in geometry:
        raise _fail(GeometryErrorCode.INVALID_COORDINATES, "the geometry has no coordinates")
    raw = geometry["coordinates"]
    counter = _Counter()
    coordinates: Any
    if kind == "Point":
        counter.add(1)
        coordinates = _position(raw, "coordinates")
    elif kind == "LineString":
        coordinates = _line(raw, "coordinates", counter)
        if len(coordinates) < 2:
            raise _fail(
                GeometryErrorCode.LINE_TOO_SHORT,
                f"a corridor's LineString needs at least 2 positions, got {len(coordinates)}",
            )
    elif kind == "Polygon":
        coordinates = _polygon(raw, "coordinates", counter)
    else:
        parts = _list(raw, "coordinates", "a list of polygons")
        if not parts:
            raise _fail(GeometryErrorCode.INVALID_COORDINATES, "the MultiPolygon has no polygons")
        coordinates = [_polygon(p, f"coordinates[{n}]", counter) for n, p in enumerate(parts)]
    return {"type": kind, "coordinates": coordinates}


Area = shapely.Polygon | shapely.MultiPolygon


def to_shapely(geometry: Mapping[str, Any]) -> Area | shapely.LineString | shapely.Point:
    """Build the lon/lat shapely geometry of a normalized GeoJSON geometry."""
    kind, coordinates = geometry["type"], geometry["coordinates"]
    if kind == "Point":
        return shapely.Point(coordinates)
    if kind == "LineString":
        return shapely.LineString(coordinates)
    if kind == "Polygon":
        return shapely.Polygon(coordinates[0], coordinates[1:])
    return shapely.MultiPolygon([(rings[0], rings[1:]) for rings in coordinates])


_G = TypeVar("_G", bound=shapely.Geometry)


def _local_metres(geometry: _G, lat0: float, lon0: float) -> _G:
    """The geometry on a plane in metres about (lat0, lon0): equirectangular, for sizes."""
    scale_x = METRES_PER_DEGREE * math.cos(math.radians(lat0))

    def move(coords: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.empty_like(coords)
        out[:, 0] = (coords[:, 0] - lon0) * scale_x
        out[:, 1] = (coords[:, 1] - lat0) * METRES_PER_DEGREE
        return out

    return shapely.transform(geometry, move)


def _check_range(
    value: float | None,
    limits: tuple[float, float],
    *,
    what: str,
    required: bool,
    codes: tuple[GeometryErrorCode, GeometryErrorCode, GeometryErrorCode],
) -> None:
    required_code, not_allowed_code, range_code = codes
    low, high = limits
    if value is None:
        if required:
            raise _fail(required_code, f"a {_OWNER_OF[what]} needs {what}")
        return
    if not required:
        raise _fail(not_allowed_code, f"{what} is only for a {_OWNER_OF[what]}")
    if not math.isfinite(value) or not low <= value <= high:
        raise _fail(range_code, f"{what} must be within {low:g}..{high:g} m, got {value:g}")


_OWNER_OF: Final = {"radius_m": "circle (Point)", "width_m": "corridor (LineString)"}
_RADIUS_CODES: Final = (
    GeometryErrorCode.RADIUS_REQUIRED,
    GeometryErrorCode.RADIUS_NOT_ALLOWED,
    GeometryErrorCode.RADIUS_OUT_OF_RANGE,
)
_WIDTH_CODES: Final = (
    GeometryErrorCode.WIDTH_REQUIRED,
    GeometryErrorCode.WIDTH_NOT_ALLOWED,
    GeometryErrorCode.WIDTH_OUT_OF_RANGE,
)
# Tolerance of the largest-inscribed-circle search, in metres: far below any margin.
_INSCRIBED_TOLERANCE_M: Final = 0.5


def count_vertices(geometry: Mapping[str, Any]) -> int:
    """Positions in a normalized geometry, all rings and parts together."""
    kind, coordinates = geometry["type"], geometry["coordinates"]
    if kind == "Point":
        return 1
    if kind == "LineString":
        return len(coordinates)
    if kind == "Polygon":
        return sum(len(ring) for ring in coordinates)
    return sum(len(ring) for polygon in coordinates for ring in polygon)


def check_shape(
    geometry: Mapping[str, Any], *, radius_m: float | None, width_m: float | None
) -> ShapeFacts:
    """Check a normalized geometry with its radius or width: validity and size.

    Raises GeometryError.
    """
    kind = geometry["type"]
    vertices = count_vertices(geometry)
    _check_range(
        radius_m,
        (MIN_RADIUS_M, MAX_RADIUS_M),
        what="radius_m",
        required=kind == "Point",
        codes=_RADIUS_CODES,
    )
    _check_range(
        width_m,
        (MIN_WIDTH_M, MAX_WIDTH_M),
        what="width_m",
        required=kind == "LineString",
        codes=_WIDTH_CODES,
    )
    if kind == "Point":
        assert radius_m is not None
        diameter = 2 * radius_m
        return ShapeFacts(1, diameter, diameter, math.pi * radius_m**2, radius_m)

    shape = to_shapely(geometry)
    assert not isinstance(shape, shapely.Point)
    reason = shapely.is_valid_reason(shape)
    if reason != "Valid Geometry":
        raise _fail(GeometryErrorCode.INVALID_GEOMETRY, f"the geometry is not valid: {reason}")
    lon_min, lat_min, lon_max, lat_max = shape.bounds
    lat0, lon0 = (lat_min + lat_max) / 2, (lon_min + lon_max) / 2
    local = _local_metres(shape, lat0, lon0)
    x_min, y_min, x_max, y_max = local.bounds
    pad = width_m or 0.0
    width, height = x_max - x_min + pad, y_max - y_min + pad
    if max(width, height) > MAX_EXTENT_M:
        raise _fail(
            GeometryErrorCode.TOO_LARGE,
            f"the geofence spans {width / 1000:,.1f} x {height / 1000:,.1f} km; "
            f"at most {MAX_EXTENT_M / 1000:,.0f} km either way",
        )
    if kind == "LineString":
        assert width_m is not None
        area = local.length * width_m
        return ShapeFacts(vertices, width, height, area, width_m / 2)
    assert not isinstance(local, shapely.LineString)
    area = local.area
    if area > MAX_AREA_M2:
        raise _fail(
            GeometryErrorCode.TOO_LARGE,
            f"the geofence covers {area / 1e6:,.0f} km2; at most {MAX_AREA_M2 / 1e6:,.0f} km2",
        )
    if area < MIN_AREA_M2:
        raise _fail(
            GeometryErrorCode.TOO_SMALL,
            f"the geofence covers {area:,.1f} m2; at least {MIN_AREA_M2:,.0f} m2, or GPS "
            "noise alone would move vehicles in and out",
        )
    inner = shapely.maximum_inscribed_circle(local, _INSCRIBED_TOLERANCE_M).length
    return ShapeFacts(vertices, width, height, area, inner)


def check_margins(facts: ShapeFacts, *, enter_margin_m: float, dwell_s: int) -> None:
    """Refuse an enter margin no vehicle could ever reach, when dwell cannot enter either."""
    if dwell_s == 0 and enter_margin_m >= facts.inner_radius_m:
        raise _fail(
            GeometryErrorCode.MARGIN_TOO_LARGE,
            f"enter_margin_m {enter_margin_m:g} is at least the fence's inner radius "
            f"({facts.inner_radius_m:,.1f} m): no vehicle could be that deep inside; lower "
            "the margin or set dwell_s",
        )
