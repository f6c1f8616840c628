"""Helpers for the geofence engine tests: fences and tracks in metres about a point."""

from __future__ import annotations

import math
import tracemalloc
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from db.geofences import Geofence, GeofenceKind

if TYPE_CHECKING:
    from collections.abc import Iterator

# People's Square, Shanghai.
LAT0 = 31.2304
LON0 = 121.4737
# Four cities far apart, as one fleet's fences may be: (lon, lat) of their centres.
CITIES = {
    "Shanghai": (121.47, 31.23),
    "Munich": (11.58, 48.14),
    "Sao Paulo": (-46.63, -23.55),
    "Sydney": (151.21, -33.87),
}
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
# Mean Earth radius; the offsets below are equirectangular, independent of the engine's
# Mercator plane, and within 0.01% over the few kilometres these tests use.
EARTH_RADIUS_M = 6_371_008.8


class Fix(NamedTuple):
    """The fields the engine reads (db.telemetry.TelemetryRow has them too)."""

    vehicle_id: str
    ts: datetime
    lat: float | None
    lon: float | None
    accuracy_m: float | None


def at(
    east_m: float, north_m: float, lat0: float = LAT0, lon0: float = LON0
) -> tuple[float, float]:
    """(lat, lon) of the point `east_m`, `north_m` metres from (lat0, lon0)."""
    lat = lat0 + math.degrees(north_m / EARTH_RADIUS_M)
    lon = lon0 + math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat0))))
    return lat, lon


def lonlat(east_m: float, north_m: float, lat0: float = LAT0, lon0: float = LON0) -> list[float]:
    """GeoJSON [lon, lat] of a point given in metres from (lat0, lon0)."""
    lat, lon = at(east_m, north_m, lat0, lon0)
    return [lon, lat]


def fix(
    east_m: float,
    north_m: float,
    second: float,
    *,
    car: str = "car-1",
    accuracy_m: float | None = 0.0,
    lat0: float = LAT0,
    lon0: float = LON0,
) -> Fix:
    """A fix `second` seconds after T0, at a point in metres from (lat0, lon0)."""
    lat, lon = at(east_m, north_m, lat0, lon0)
    return Fix(car, T0 + timedelta(seconds=second), lat, lon, accuracy_m)


def square(
    fence_id: int, half_m: float, *, lat0: float = LAT0, lon0: float = LON0, **fields: Any
) -> Geofence:
    """A square area fence of side 2 * half_m centred on (lat0, lon0); margins 0 unless given."""
    ring = [
        lonlat(-half_m, -half_m, lat0, lon0),
        lonlat(half_m, -half_m, lat0, lon0),
        lonlat(half_m, half_m, lat0, lon0),
        lonlat(-half_m, half_m, lat0, lon0),
        lonlat(-half_m, -half_m, lat0, lon0),
    ]
    return _fence(fence_id, {"type": "Polygon", "coordinates": [ring]}, fields)


def circle(
    fence_id: int,
    radius_m: float,
    *,
    east_m: float = 0.0,
    north_m: float = 0.0,
    lat0: float = LAT0,
    lon0: float = LON0,
    **fields: Any,
) -> Geofence:
    """A circle fence of `radius_m` metres about a point; margins 0 unless given."""
    geometry = {"type": "Point", "coordinates": lonlat(east_m, north_m, lat0, lon0)}
    return _fence(fence_id, geometry, {"radius_m": radius_m, **fields})


def corridor(
    fence_id: int,
    points_m: list[tuple[float, float]],
    width_m: float,
    *,
    lat0: float = LAT0,
    lon0: float = LON0,
    **fields: Any,
) -> Geofence:
    """A corridor along points given in metres, `width_m` wide; margins 0 unless given."""
    line = [lonlat(east, north, lat0, lon0) for east, north in points_m]
    geometry = {"type": "LineString", "coordinates": line}
    return _fence(fence_id, geometry, {"width_m": width_m, **fields})


def _fence(fence_id: int, geometry: dict[str, Any], fields: dict[str, Any]) -> Geofence:
    defaults: dict[str, Any] = {
        "name": f"fence {fence_id}",
        "kind": GeofenceKind.PARKING_ZONE,
        "enter_margin_m": 0.0,
        "exit_margin_m": 0.0,
    }
    return Geofence(id=fence_id, geometry=geometry, **{**defaults, **fields})


class Peak:
    """The most memory allocated at once in a block, in bytes (see `peak_memory`)."""

    bytes = 0


@contextmanager
def peak_memory() -> Iterator[Peak]:
    """Measure the most memory allocated at once inside the block, numpy's arrays included.

    tracemalloc counts what Python and numpy allocate (not GEOS's own memory): a measure of
    what a computation asks for that does not depend on the machine's load, as time would.
    """
    tracemalloc.start()
    peak = Peak()
    try:
        yield peak
    finally:
        peak.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
