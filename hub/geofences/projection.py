"""One metric plane for every fence and every fix: spherical Web Mercator, scaled per fix.

Mercator is conformal: about any point it stretches every direction alike, by 1/cos(lat).
So a distance measured in the plane near a fix becomes metres when multiplied by the fix's
cos(lat) (`metres_per_unit`). The error of that scale grows with the distance measured,
not with the distance from some origin: over a distance d it is about tan(lat) * d / R,
0.016% per km at Shanghai (31 N) and 0.027% per km at 60 N. The margins and depths the
hub compares are tens to hundreds of metres, so they are right to a few millimetres,
wherever the fleet is: no origin to choose, and fleets in several cities share one plane.

The sphere itself (mean radius) differs from the WGS84 ellipsoid by up to 0.3% in the
meridional direction at these latitudes: 3 cm on a 10 m margin. Coordinates arrive as
GeoJSON and GPS lon/lat on WGS84 and are used as they are. No pyproj: these two formulas
are all the hub needs, vectorised with numpy.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

from db.geofences.validation import EARTH_RADIUS_M

FloatArray = NDArray[np.float64]

_QUARTER_PI: Final = math.pi / 4


def to_plane(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> tuple[FloatArray, FloatArray]:
    """Project lon/lat degrees onto the plane (units: metres at the equator)."""
    x = EARTH_RADIUS_M * np.radians(lon)
    y = EARTH_RADIUS_M * np.log(np.tan(_QUARTER_PI + np.radians(lat) / 2))
    return x, y


def from_plane(x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[FloatArray, FloatArray]:
    """Back from the plane to lon/lat degrees."""
    lon = np.degrees(x / EARTH_RADIUS_M)
    lat = np.degrees(2 * np.arctan(np.exp(y / EARTH_RADIUS_M)) - math.pi / 2)
    return lon, lat


def metres_per_unit(lat: NDArray[np.float64]) -> FloatArray:
    """Ground metres per plane unit near latitude `lat` (degrees): cos(lat)."""
    return np.cos(np.radians(lat))


def point_to_plane(lon: float, lat: float) -> tuple[float, float]:
    """`to_plane` for one position."""
    return (
        EARTH_RADIUS_M * math.radians(lon),
        EARTH_RADIUS_M * math.log(math.tan(_QUARTER_PI + math.radians(lat) / 2)),
    )


def point_from_plane(x: float, y: float) -> tuple[float, float]:
    """`from_plane` for one position: (lon, lat)."""
    lon = math.degrees(x / EARTH_RADIUS_M)
    lat = math.degrees(2 * math.atan(math.exp(y / EARTH_RADIUS_M)) - math.pi / 2)
    return lon, lat
