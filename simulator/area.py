"""Where the fleet drives: a bundled city, a bounding box, or a GeoJSON file of one's own.

`--area` takes one of:

- a city name (`shanghai`): the bundled road network and service area of that city;
- `minlon,minlat,maxlon,maxlat`: a grid of streets over the box, whose service area is the
  box itself (the grid reaches a little beyond it, so vehicles can leave the area);
- a path to a `.geojson` file: its LineStrings (and MultiLineStrings) are the roads, its
  first Polygon (one with `"kind": "service_area"` preferred) the service area; with no
  LineStrings, a grid of streets is laid over the Polygon instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from simulator.geo import LocalFrame, Polygon
from simulator.roads import (
    DEFAULT_KIND,
    Road,
    RoadNetwork,
    RoadNetworkError,
    build_network,
    grid_roads,
)

# A city block: streets every 400 m is a walkable downtown grid.
GRID_SPACING_M: Final = 400.0
# Beyond this many streets a side, blocks grow instead: a country-sized box still loads fast.
MAX_GRID_LINES: Final = 80
# The grid reaches this fraction of the box's size beyond each side of the service area.
GRID_MARGIN: Final = 0.1


class AreaError(ValueError):
    """`--area` names no city, box or readable GeoJSON file with roads or a polygon."""


@dataclass(frozen=True, slots=True)
class Area:
    """A road network and its service area, under a name for the summary."""

    name: str
    network: RoadNetwork

    @property
    def service_area(self) -> Polygon:
        """The polygon vehicles normally stay inside."""
        return self.network.service_area


def bundled_cities() -> list[str]:
    """The names `--area` accepts as a city."""
    files = resources.files("simulator.data").iterdir()
    return sorted(f.name.removesuffix(".geojson") for f in files if f.name.endswith(".geojson"))


def load_area(spec: str) -> Area:
    """Resolve an `--area` value; raises AreaError with what was expected."""
    text = spec.strip()
    if text.lower() in bundled_cities():
        data = resources.files("simulator.data").joinpath(f"{text.lower()}.geojson").read_text()
        return _from_geojson(text.lower(), json.loads(data))
    if text.count(",") == 3 and not text.endswith(".geojson"):
        return Area(text, grid_network(_parse_bbox(text)))
    path = Path(text)
    if path.suffix.lower() in {".geojson", ".json"} or path.exists():
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise AreaError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise AreaError(f"{path} is not UTF-8 text (expected GeoJSON)") from None
        except json.JSONDecodeError as exc:
            raise AreaError(f"{path} is not JSON: {exc}") from None
        return _from_geojson(path.name, document)
    cities = ", ".join(bundled_cities())
    raise AreaError(
        f"--area {spec!r} is neither a city ({cities}), a box MINLON,MINLAT,MAXLON,MAXLAT "
        "nor a .geojson file"
    )


def _parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        min_lon, min_lat, max_lon, max_lat = (float(part) for part in text.split(","))
    except ValueError:
        raise AreaError(
            f"--area {text!r}: a box is four numbers MINLON,MINLAT,MAXLON,MAXLAT"
        ) from None
    if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
        raise AreaError(f"--area {text!r}: need -180 <= MINLON < MAXLON <= 180, likewise lat")
    return min_lon, min_lat, max_lon, max_lat


def grid_network(
    bbox: tuple[float, float, float, float], *, area: Polygon | None = None
) -> RoadNetwork:
    """A street grid over `bbox` and a margin around it; the service area defaults to the box."""
    min_lon, min_lat, max_lon, max_lat = bbox
    margin_lon = (max_lon - min_lon) * GRID_MARGIN
    margin_lat = (max_lat - min_lat) * GRID_MARGIN
    grown = (min_lon - margin_lon, min_lat - margin_lat, max_lon + margin_lon, max_lat + margin_lat)
    width, height = LocalFrame(grown[:2]).to_xy(grown[2:])
    spacing = max(GRID_SPACING_M, max(width, height) / (MAX_GRID_LINES - 1))
    service_area = area or Polygon.from_bbox(*bbox)
    return build_network(grid_roads(grown, spacing), service_area)


def _from_geojson(name: str, document: Any) -> Area:  # noqa: ANN401 - parsed JSON
    features = _features(document)
    roads: list[Road] = []
    polygons: list[tuple[dict[str, Any], Polygon]] = []
    for feature in features:
        geometry: dict[str, Any] = feature.get("geometry") or {}
        props: dict[str, Any] = feature.get("properties") or {}
        kind = str(props.get("kind") or DEFAULT_KIND)
        label = str(props.get("name") or "")
        coords: Any = geometry.get("coordinates")
        try:
            if geometry.get("type") == "LineString":
                roads.append(Road(_line(coords), kind, label))
            elif geometry.get("type") == "MultiLineString":
                roads.extend(Road(_line(part), kind, label) for part in coords)
            elif geometry.get("type") == "Polygon":
                polygons.append((props, Polygon.from_geojson(coords)))
        except (TypeError, ValueError, IndexError) as exc:
            raise AreaError(
                f"{name}: a {geometry.get('type')} has bad coordinates: {exc}"
            ) from None
    if not polygons and not roads:
        raise AreaError(f"{name}: no LineString (roads) and no Polygon (service area)")
    service = _service_area(polygons, roads)
    try:
        if roads:
            return Area(name, build_network(roads, service))
        return Area(name, grid_network(service.bbox(), area=service))
    except RoadNetworkError as exc:
        raise AreaError(f"{name}: {exc}") from None


def _features(document: Any) -> list[dict[str, Any]]:  # noqa: ANN401 - parsed JSON
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        return [f for f in document.get("features", []) if isinstance(f, dict)]
    if isinstance(document, dict) and document.get("type") == "Feature":
        return [document]
    if isinstance(document, dict) and "coordinates" in document:
        return [{"type": "Feature", "geometry": document, "properties": {}}]
    raise AreaError("not a GeoJSON FeatureCollection, Feature or geometry")


def _line(coords: Any) -> tuple[tuple[float, float], ...]:  # noqa: ANN401 - parsed JSON
    return tuple((float(p[0]), float(p[1])) for p in coords)


def _service_area(polygons: list[tuple[dict[str, Any], Polygon]], roads: list[Road]) -> Polygon:
    for props, polygon in polygons:
        if props.get("kind") == "service_area":
            return polygon
    if polygons:
        return polygons[0][1]
    # Roads only: the service area is their bounding box.
    lons = [p[0] for road in roads for p in road.points]
    lats = [p[1] for road in roads for p in road.points]
    return Polygon.from_bbox(min(lons), min(lats), max(lons), max(lats))
