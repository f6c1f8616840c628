"""Geofence definitions: GeoJSON validation with stable error codes, and GeoJSON import."""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import pytest
from pydantic import ValidationError

from db.geofences import (
    GeofenceImportError,
    GeofenceKind,
    GeofenceSpec,
    GeometryError,
    GeometryErrorCode,
    specs_from_geojson,
)
from db.geofences.validation import MAX_VERTICES, check_shape, normalize_geometry

# Shanghai, People's Square; about 95 m east and 111 m north per 0.001 degree.
LON, LAT = 121.4737, 31.2304


def square(side_deg: float = 0.002, lon: float = LON, lat: float = LAT) -> list[list[float]]:
    return [
        [lon, lat],
        [lon + side_deg, lat],
        [lon + side_deg, lat + side_deg],
        [lon, lat + side_deg],
        [lon, lat],
    ]


def polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


BAD_COORDINATES = GeometryErrorCode.INVALID_COORDINATES


def spec(geometry: object, **fields: Any) -> GeofenceSpec:
    return GeofenceSpec.model_validate(
        {"name": "zone", "kind": "parking_zone", "geometry": geometry, **fields}
    )


def error_code(geometry: object, **fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        spec(geometry, **fields)
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    return str(errors[0]["type"])


def test_a_valid_polygon_is_stored_canonical() -> None:
    ring = [[*p, 12.0] for p in square()]  # altitudes are dropped
    ring[1] = [int(LON) + 0.5, LAT]  # any number type is fine
    fence = spec({"type": "Polygon", "coordinates": [ring], "bbox": [0, 0, 1, 1]})
    assert fence.geometry.keys() == {"type", "coordinates"}
    assert all(len(p) == 2 for p in fence.geometry["coordinates"][0])
    assert fence.kind is GeofenceKind.PARKING_ZONE
    assert (fence.enter_margin_m, fence.exit_margin_m, fence.dwell_s) == (10.0, 10.0, 0)


@pytest.mark.parametrize(
    ("geometry", "code"),
    [
        ("POLYGON((0 0, 1 1))", GeometryErrorCode.NOT_AN_OBJECT),
        ({"type": "GeometryCollection", "geometries": []}, GeometryErrorCode.UNSUPPORTED_TYPE),
        ({"type": "Feature", "geometry": polygon(square())}, GeometryErrorCode.UNSUPPORTED_TYPE),
        ({"type": "MultiPoint", "coordinates": [[LON, LAT]]}, GeometryErrorCode.UNSUPPORTED_TYPE),
        ({"type": "Polygon"}, GeometryErrorCode.INVALID_COORDINATES),
        (polygon([[LON, LAT], "x", [LON, LAT], [LON, LAT]]), BAD_COORDINATES),
        (polygon([[LON, True], [LON, 1], [1, 1], [LON, True]]), BAD_COORDINATES),
        (polygon([[LON, math.nan], [1, 1], [1, 2], [LON, math.nan]]), BAD_COORDINATES),
        ({"type": "Polygon", "coordinates": []}, GeometryErrorCode.INVALID_COORDINATES),
        ({"type": "MultiPolygon", "coordinates": []}, GeometryErrorCode.INVALID_COORDINATES),
        (polygon(square()[:-1]), GeometryErrorCode.RING_NOT_CLOSED),
        (polygon(square()[:3]), GeometryErrorCode.RING_TOO_SHORT),
        (polygon(square(lon=181.0)), GeometryErrorCode.POSITION_OUT_OF_RANGE),
        (polygon(square(lon=-180.5)), GeometryErrorCode.POSITION_OUT_OF_RANGE),
        (polygon(square(lat=86.0)), GeometryErrorCode.POSITION_OUT_OF_RANGE),
        # [lat, lon] instead of [lon, lat]: 121 is no latitude.
        (polygon([[p[1], p[0]] for p in square()]), GeometryErrorCode.POSITION_OUT_OF_RANGE),
    ],
)  # fmt: skip
def test_malformed_geojson_is_refused_with_its_code(geometry: object, code: str) -> None:
    assert error_code(geometry) == code


def test_a_bow_tie_is_invalid_and_says_where() -> None:
    d = 0.002
    bow_tie = [[LON, LAT], [LON + d, LAT + d], [LON + d, LAT], [LON, LAT + d], [LON, LAT]]
    with pytest.raises(ValidationError) as caught:
        spec(polygon(bow_tie))
    (error,) = caught.value.errors()
    assert error["type"] == GeometryErrorCode.INVALID_GEOMETRY
    assert "Self-intersection" in error["msg"]


def test_a_hole_outside_its_shell_is_invalid() -> None:
    assert (
        error_code(polygon(square(), square(0.0005, lon=LON + 0.01)))
        == GeometryErrorCode.INVALID_GEOMETRY
    )


def test_size_limits() -> None:
    # 4 degrees: about 380 x 445 km, wider than 200 km.
    assert error_code(polygon(square(4.0))) == GeometryErrorCode.TOO_LARGE
    # 1.2 degrees: about 114 x 133 km, within the extent but 15,000 km2 (over 10,000).
    assert error_code(polygon(square(1.2))) == GeometryErrorCode.TOO_LARGE
    # 5 x 5 m.
    assert error_code(polygon(square(0.00005))) == GeometryErrorCode.TOO_SMALL
    # A city-sized service area is fine.
    assert spec(polygon(square(0.5)), kind="service_area").geometry["type"] == "Polygon"


def test_vertex_limit() -> None:
    count = MAX_VERTICES + 1
    angles = [2 * math.pi * k / count for k in range(count)]
    ring = [[LON + 0.01 * math.cos(a), LAT + 0.01 * math.sin(a)] for a in angles]
    ring.append(ring[0])
    assert error_code(polygon(ring)) == GeometryErrorCode.TOO_MANY_VERTICES
    with pytest.raises(GeometryError) as caught:
        normalize_geometry(polygon(ring))
    assert caught.value.code is GeometryErrorCode.TOO_MANY_VERTICES


def test_circles_need_a_sane_radius() -> None:
    point = {"type": "Point", "coordinates": [LON, LAT]}
    assert spec(point, radius_m=250).is_circle
    assert error_code(point) == GeometryErrorCode.RADIUS_REQUIRED
    assert error_code(point, radius_m=5) == GeometryErrorCode.RADIUS_OUT_OF_RANGE
    assert error_code(point, radius_m=60_000) == GeometryErrorCode.RADIUS_OUT_OF_RANGE
    assert error_code(point, radius_m=math.inf) == GeometryErrorCode.RADIUS_OUT_OF_RANGE
    assert error_code(polygon(square()), radius_m=100) == GeometryErrorCode.RADIUS_NOT_ALLOWED
    assert error_code(point, radius_m=100, width_m=20) == GeometryErrorCode.WIDTH_NOT_ALLOWED


def test_corridors_need_a_sane_width() -> None:
    line = {"type": "LineString", "coordinates": [[LON, LAT], [LON + 0.01, LAT + 0.01]]}
    assert spec(line, width_m=30).is_corridor
    assert error_code(line) == GeometryErrorCode.WIDTH_REQUIRED
    assert error_code(line, width_m=4) == GeometryErrorCode.WIDTH_OUT_OF_RANGE
    assert error_code(line, width_m=6_000) == GeometryErrorCode.WIDTH_OUT_OF_RANGE
    short = {"type": "LineString", "coordinates": [[LON, LAT]]}
    assert error_code(short, width_m=30) == GeometryErrorCode.LINE_TOO_SHORT
    same = {"type": "LineString", "coordinates": [[LON, LAT], [LON, LAT]]}
    assert error_code(same, width_m=30) == GeometryErrorCode.INVALID_GEOMETRY
    # A line may cross itself: a corridor is its buffer.
    loop = [[LON, LAT], [LON + 0.01, LAT + 0.01], [LON + 0.01, LAT], [LON, LAT + 0.01]]
    assert spec({"type": "LineString", "coordinates": loop}, width_m=30).is_corridor


def test_an_enter_margin_deeper_than_the_fence_needs_dwell() -> None:
    point = {"type": "Point", "coordinates": [LON, LAT]}
    assert error_code(point, radius_m=20, enter_margin_m=25) == GeometryErrorCode.MARGIN_TOO_LARGE
    assert spec(point, radius_m=20, enter_margin_m=25, dwell_s=60).dwell_s == 60
    # A 0.0003 x 0.0003 degree square is about 28 x 33 m: 14 m deep at most.
    small = polygon(square(0.0003))
    assert error_code(small, enter_margin_m=15) == GeometryErrorCode.MARGIN_TOO_LARGE
    assert spec(small, enter_margin_m=13).enter_margin_m == 13


def test_other_fields_are_checked() -> None:
    geometry = polygon(square())
    assert error_code(geometry, kind="no_parking") == "enum"
    assert error_code(geometry, name="  ") == "string_too_short"
    assert error_code(geometry, enter_margin_m=-1) == "greater_than_equal"
    assert error_code(geometry, dwell_s=100_000) == "less_than_equal"
    assert error_code(geometry, speed_limit_kmh=0) == "greater_than"
    assert error_code(geometry, colour="red") == "extra_forbidden"


def test_check_shape_reports_what_it_measured() -> None:
    facts = check_shape(normalize_geometry(polygon(square(0.01))), radius_m=None, width_m=None)
    # 0.01 degree: about 951 m east-west and 1,112 m north-south at Shanghai.
    assert facts.width_m == pytest.approx(951, rel=0.01)
    assert facts.height_m == pytest.approx(1112, rel=0.01)
    assert facts.area_m2 == pytest.approx(951 * 1112, rel=0.02)
    assert facts.inner_radius_m == pytest.approx(951 / 2, rel=0.01)
    assert facts.vertices == 5


def test_a_geofence_round_trips_through_json() -> None:
    fence = spec(
        polygon(square()),
        schedule={"days": [5, 6], "from": "22:00", "to": "06:00", "tz": "Asia/Shanghai"},
        speed_limit_kmh=20,
    )
    again = GeofenceSpec.model_validate_json(fence.model_dump_json(by_alias=True))
    assert again == fence


# --- import ------------------------------------------------------------------------------------


def test_the_demo_city_imports() -> None:
    text = resources.files("freecar.demo_data").joinpath("shanghai.geojson").read_text("utf-8")
    specs = specs_from_geojson(json.loads(text))
    assert len(specs) == 8
    assert {s.kind for s in specs} == set(GeofenceKind)
    assert sum(s.is_circle for s in specs) == 6


def test_an_import_lists_every_bad_feature() -> None:
    good = {
        "type": "Feature",
        "properties": {"name": "ok", "kind": "restricted"},
        "geometry": polygon(square()),
    }
    open_ring = {
        **good,
        "properties": {"name": "open", "kind": "restricted"},
        "geometry": polygon(square()[:-1]),
    }
    no_radius = {
        **good,
        "properties": {"name": "dot", "kind": "parking_zone"},
        "geometry": {"type": "Point", "coordinates": [LON, LAT]},
    }
    features = [good, open_ring, "junk", no_radius]
    document = {"type": "FeatureCollection", "features": features}
    with pytest.raises(GeofenceImportError) as caught:
        specs_from_geojson(document)
    problems = caught.value.problems
    assert [(p.index, p.name, p.code) for p in problems] == [
        (1, "open", "ring_not_closed"),
        (2, None, "not_a_feature"),
        (3, "dot", "radius_required"),
    ]
    assert "feature 1 (open): ring_not_closed: geometry: coordinates[0]" in str(caught.value)


def test_an_import_takes_one_feature_and_ignores_unknown_properties() -> None:
    feature = {
        "type": "Feature",
        "properties": {"name": "lot", "kind": "parking_zone", "radius_m": 80, "colour": "red"},
        "geometry": {"type": "Point", "coordinates": [LON, LAT]},
    }
    (only,) = specs_from_geojson(feature)
    assert only.radius_m == 80
    with pytest.raises(GeofenceImportError, match="not_a_feature_collection"):
        specs_from_geojson({"type": "Polygon"})
