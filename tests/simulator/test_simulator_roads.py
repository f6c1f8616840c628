"""Road networks and areas: the bundled city, grids from a box, GeoJSON files of one's own."""

import itertools
import json
import math
from collections import deque
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.area import Area, AreaError, bundled_cities, load_area
from simulator.geo import LocalFrame, Polygon, distance_m
from simulator.roads import ROAD_SPEEDS_KMH, Road, build_network


@pytest.fixture(scope="module")
def shanghai() -> Area:
    return load_area("shanghai")


def _demo_features() -> list[dict[str, object]]:
    text = resources.files("freecar.demo_data").joinpath("shanghai.geojson").read_text("utf-8")
    features: list[dict[str, object]] = json.loads(text)["features"]
    return features


def _reachable(area: Area, start: int) -> set[int]:
    network = area.network
    seen = {start}
    todo = deque([start])
    while todo:
        node = todo.popleft()
        for edge in network.adjacency[node]:
            nxt = edge.other(node)
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_shanghai_is_bundled_and_its_service_area_is_the_demos() -> None:
    assert "shanghai" in bundled_cities()
    text = resources.files("simulator.data").joinpath("shanghai.geojson").read_text("utf-8")
    ours = [f for f in json.loads(text)["features"] if f["properties"]["kind"] == "service_area"]
    demo = [f for f in _demo_features() if f["properties"]["kind"] == "service_area"]  # type: ignore[index]
    assert len(ours) == 1
    assert ours[0]["geometry"] == demo[0]["geometry"]  # type: ignore[index]


def test_shanghai_network_is_connected_and_keeps_every_road(shanghai: Area) -> None:
    network = shanghai.network
    assert len(network.nodes) > 50
    assert _reachable(shanghai, 0) == set(range(len(network.nodes)))
    # Nothing was dropped as a disconnected piece: the graph is as long as the drawing.
    text = resources.files("simulator.data").joinpath("shanghai.geojson").read_text("utf-8")
    drawn = sum(
        distance_m(p, q)
        for f in json.loads(text)["features"]
        if f["geometry"]["type"] == "LineString"
        for p, q in zip(
            f["geometry"]["coordinates"], f["geometry"]["coordinates"][1:], strict=False
        )
    )
    assert network.total_length_m() == pytest.approx(drawn, rel=1e-6)
    assert 100_000 < drawn < 250_000  # a few dozen main streets of the city centre


def test_shanghai_has_ways_out_and_inside_routes_stay_inside(shanghai: Area) -> None:
    network = shanghai.network
    assert network.outside_nodes, "leave-service-area needs roads that leave it"
    area = shanghai.service_area
    for node in network.inside_nodes:
        assert area.contains(network.nodes[node])
    start, goal = network.inside_nodes[0], network.inside_nodes[-1]
    route = network.route(start, goal, stay_inside=True)
    assert route
    assert all(network.inside_edge[step.edge.id] for step in route)


def test_shanghai_roads_avoid_the_pedestrian_street(shanghai: Area) -> None:
    restricted = [
        Polygon.from_geojson(f["geometry"]["coordinates"])  # type: ignore[index]
        for f in _demo_features()
        if f["properties"]["kind"] == "restricted"  # type: ignore[index]
    ]
    assert restricted
    for edge in shanghai.network.edges:
        for p, q in zip(edge.points, edge.points[1:], strict=False):
            for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
                point = (p[0] + (q[0] - p[0]) * fraction, p[1] + (q[1] - p[1]) * fraction)
                assert not any(zone.contains(point) for zone in restricted), edge.name


def test_shanghai_road_kinds_have_city_speeds(shanghai: Area) -> None:
    kinds = {edge.kind for edge in shanghai.network.edges}
    assert kinds <= set(ROAD_SPEEDS_KMH)
    assert {"elevated", "arterial", "street"} <= kinds
    assert all(30 <= edge.speed_kmh <= 60 for edge in shanghai.network.edges)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_routes_are_contiguous_and_end_where_asked(shanghai: Area, data: st.DataObject) -> None:
    network = shanghai.network
    start = data.draw(st.sampled_from(network.inside_nodes))
    goal = data.draw(st.sampled_from(network.inside_nodes))
    route = network.route(start, goal, stay_inside=True)
    if start == goal:
        assert route == []
        return
    assert route
    assert route[0].start == start
    assert route[-1].end == goal
    for here, there in itertools.pairwise(route):
        assert here.end == there.start
        assert here.points[-1] == there.points[0]


def test_a_box_becomes_a_grid_reaching_beyond_it() -> None:
    area = load_area("121.40,31.18,121.50,31.25")
    network = area.network
    assert area.service_area.bbox() == (121.40, 31.18, 121.50, 31.25)
    assert network.outside_nodes
    assert len(network.inside_nodes) > 100
    # Streets about 400 m apart.
    frame = LocalFrame((121.40, 31.18))
    lengths = sorted(edge.length_m for edge in network.edges)
    assert 300 < lengths[len(lengths) // 2] < 500
    assert all(math.isfinite(x) for p in network.nodes for x in frame.to_xy(p))


def test_a_huge_box_stays_a_bounded_grid() -> None:
    area = load_area("100,20,120,40")
    assert len(area.network.nodes) <= 80 * 80


def test_geojson_file_roads_and_polygon(tmp_path) -> None:
    path = tmp_path / "town.geojson"
    square = [[0.0, 0.0], [0.02, 0.0], [0.02, 0.02], [0.0, 0.02], [0.0, 0.0]]
    main_st = [[0.005, 0.01], [0.01, 0.01], [0.015, 0.01]]
    cross_st = [[0.01, 0.005], [0.01, 0.01], [0.01, 0.015]]
    features = [
        {
            "type": "Feature",
            "properties": {"kind": "service_area"},
            "geometry": {"type": "Polygon", "coordinates": [square]},
        },
        {
            "type": "Feature",
            "properties": {"name": "Main St", "kind": "street"},
            "geometry": {"type": "LineString", "coordinates": main_st},
        },
        {
            "type": "Feature",
            "properties": {"name": "Cross St"},
            "geometry": {"type": "LineString", "coordinates": cross_st},
        },
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    area = load_area(str(path))
    network = area.network
    # One junction in the middle joins the two streets; their four ends are nodes too.
    assert sum(network.degree(n) == 4 for n in range(len(network.nodes))) == 1
    # Every road lies inside the square, so ways out were added.
    assert network.outside_nodes
    assert {edge.name for edge in network.edges} >= {"Main St", "Cross St", "exit"}


def test_geojson_polygon_alone_gets_a_grid(tmp_path) -> None:
    path = tmp_path / "zone.geojson"
    ring = [[10.0, 50.0], [10.05, 50.0], [10.05, 50.03], [10.0, 50.03], [10.0, 50.0]]
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    area = load_area(str(path))
    assert len(area.network.inside_nodes) > 20
    assert area.service_area.contains((10.02, 50.01))


def test_roads_crossing_without_a_shared_vertex_are_not_joined() -> None:
    area = Polygon.from_bbox(-1, -1, 1, 1)
    roads = [
        Road(((-0.01, 0.0), (0.01, 0.0)), "elevated"),
        Road(((0.0, -0.01), (0.0, 0.01)), "street"),
    ]
    network = build_network(roads, area)
    # Only one of the two survives: they are separate pieces, and the largest is kept.
    assert len([e for e in network.edges if e.name != "exit"]) == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("atlantis", "neither a city"),
        ("1,2,3", "neither a city"),
        ("121.5,31.2,121.4,31.3", "MINLON < MAXLON"),
        ("a,b,c,d", "four numbers"),
        ("/nonexistent/roads.geojson", "cannot read"),
    ],
)
def test_bad_areas_are_refused_with_a_reason(spec: str, message: str) -> None:
    with pytest.raises(AreaError, match=message):
        load_area(spec)


def test_a_geojson_without_roads_or_polygon_is_refused(tmp_path) -> None:
    path = tmp_path / "points.geojson"
    point = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Point", "coordinates": [1, 2]},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [point]}))
    with pytest.raises(AreaError, match="no LineString"):
        load_area(str(path))
