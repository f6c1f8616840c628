"""Plane geometry on a small patch of the Earth: distances, bearings, points in polygons.

A city is a few tens of kilometres across, so an equirectangular projection around the
area's centre is accurate to well under a metre there; that keeps the motion model's
arithmetic to additions and multiplications on every tick.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Final

# Mean Earth radius (IUGG), in metres.
EARTH_RADIUS_M: Final = 6_371_008.8

LonLat = tuple[float, float]
Ring = tuple[LonLat, ...]


def distance_m(a: LonLat, b: LonLat) -> float:
    """Great-circle distance between two (lon, lat) points, in metres (haversine)."""
    lon1, lat1 = math.radians(a[0]), math.radians(a[1])
    lon2, lat2 = math.radians(b[0]), math.radians(b[1])
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(a: LonLat, b: LonLat) -> float:
    """Initial bearing from `a` to `b`, degrees clockwise from true north, in [0, 360)."""
    lon1, lat1 = math.radians(a[0]), math.radians(a[1])
    lon2, lat2 = math.radians(b[0]), math.radians(b[1])
    dlon = lon2 - lon1
    x = math.sin(dlon) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlon)
    return math.degrees(math.atan2(x, y)) % 360.0


def turn_deg(heading_in: float, heading_out: float) -> float:
    """How sharply a path turns from one heading to another, 0 (straight) to 180 (U-turn)."""
    diff = abs(heading_out - heading_in) % 360.0
    return 360.0 - diff if diff > 180.0 else diff


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """Metres east and north of an origin, for short distances around it."""

    origin: LonLat

    @property
    def _m_per_deg_lat(self) -> float:
        return math.pi * EARTH_RADIUS_M / 180.0

    @property
    def _m_per_deg_lon(self) -> float:
        return self._m_per_deg_lat * math.cos(math.radians(self.origin[1]))

    def to_xy(self, point: LonLat) -> tuple[float, float]:
        """(east, north) in metres."""
        return (
            (point[0] - self.origin[0]) * self._m_per_deg_lon,
            (point[1] - self.origin[1]) * self._m_per_deg_lat,
        )

    def to_lonlat(self, x: float, y: float) -> LonLat:
        """The (lon, lat) of a point `x` m east and `y` m north of the origin."""
        return (
            self.origin[0] + x / self._m_per_deg_lon,
            self.origin[1] + y / self._m_per_deg_lat,
        )


@dataclass(frozen=True, slots=True)
class Polygon:
    """A simple polygon (outer ring only) in (lon, lat); holes are not needed for areas."""

    ring: Ring

    @classmethod
    def from_geojson(cls, coordinates: list[list[list[float]]]) -> Polygon:
        """From a GeoJSON Polygon's coordinates; only the outer ring is kept."""
        outer = coordinates[0]
        if len(outer) < 4:
            raise ValueError("a polygon ring needs at least 4 positions")
        return cls(tuple((float(p[0]), float(p[1])) for p in outer))

    @classmethod
    def from_bbox(cls, min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> Polygon:
        """The rectangle of a bounding box."""
        return cls(
            (
                (min_lon, min_lat),
                (max_lon, min_lat),
                (max_lon, max_lat),
                (min_lon, max_lat),
                (min_lon, min_lat),
            )
        )

    def contains(self, point: LonLat) -> bool:
        """Whether the point is inside (even-odd rule; a point on the edge may go either way)."""
        x, y = point
        inside = False
        ring = self.ring
        for (x1, y1), (x2, y2) in itertools.pairwise(ring):
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside

    def bbox(self) -> tuple[float, float, float, float]:
        """(min_lon, min_lat, max_lon, max_lat)."""
        lons = [p[0] for p in self.ring]
        lats = [p[1] for p in self.ring]
        return min(lons), min(lats), max(lons), max(lats)

    def centroid(self) -> LonLat:
        """The mean of the ring's vertices: inside for the convex-ish areas cities draw."""
        points = self.ring[:-1] if self.ring[0] == self.ring[-1] else self.ring
        return (
            sum(p[0] for p in points) / len(points),
            sum(p[1] for p in points) / len(points),
        )

    def to_geojson(self) -> dict[str, object]:
        """As a GeoJSON Polygon geometry."""
        return {"type": "Polygon", "coordinates": [[list(p) for p in self.ring]]}
