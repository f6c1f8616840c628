"""The geofence engine's fast paths give the answers they stand in for, to the last bit.

The grid finds what an STRtree of the same boxes finds; facet distances are the doubles
shapely computes, and `dwithin` answers the same; the batch-wide shortcuts (vehicles deep
inside a vast fence, first steps judged by their end's fences) leave every transition and
state as the general path makes them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import shapely
from geofence_testing import (
    CITIES,
    Fix,
    at,
    circle,
    corridor,
    fix,
    lonlat,
    peak_memory,
    square,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.geofences import Geofence, GeofenceKind, GeofenceState
from hub.geofences import FenceIndex, GeofenceEngine, GeofenceTransition
from hub.geofences import crossing as crossing_module
from hub.geofences import grid as grid_module
from hub.geofences.grid import BoxGrid
from hub.geofences.index import FixColumns
from hub.geofences.projection import metres_per_unit, to_plane
from hub.geofences.shapes import point_to_segment

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the grid ----------------------------------------------------------------------------------

# Plane coordinates: metres at the equator, anywhere from a city block to a continent.
coordinate = st.floats(-2e7, 2e7, allow_nan=False, allow_infinity=False)
extent = st.one_of(st.just(0.0), st.floats(0, 500), st.floats(0, 50_000), st.floats(0, 5e6))


@st.composite
def box_rows(draw: st.DrawFn, min_size: int = 0) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Boxes as rows of (min x, min y, max x, max y): points, streets, districts, regions."""
    rows = draw(st.lists(st.tuples(coordinate, coordinate, extent, extent), min_size=min_size))
    bounds = np.array([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=float)
    return bounds.reshape(-1, 4)


def _tree_pairs(bounds: np.ndarray[Any, Any], queries: np.ndarray[Any, Any]) -> set[Any]:
    tree = shapely.STRtree(shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3]))
    found = tree.query(
        shapely.box(queries[:, 0], queries[:, 1], queries[:, 2], queries[:, 3])
        if len(queries)
        else np.empty(0, dtype=object)
    )
    return set(zip(found[0].tolist(), found[1].tolist(), strict=True))


def _grid_pairs(found: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> set[Any]:
    pairs = list(zip(found[0].tolist(), found[1].tolist(), strict=True))
    assert len(pairs) == len(set(pairs)), "a pair found twice"
    return set(pairs)


def _near(bounds: np.ndarray[Any, Any], data: st.DataObject) -> np.ndarray[Any, Any]:
    """Points anywhere, and on the corners and edges of the boxes (the borders count)."""
    points = data.draw(st.lists(st.tuples(coordinate, coordinate), max_size=30))
    if len(bounds):
        for row in data.draw(st.lists(st.sampled_from(bounds.tolist()), max_size=30)):
            x = data.draw(st.sampled_from([row[0], row[2], (row[0] + row[2]) / 2]))
            y = data.draw(st.sampled_from([row[1], row[3], (row[1] + row[3]) / 2]))
            points.append((x, y))
    return np.array(points, dtype=float).reshape(-1, 2)


# What one example of the grid's property test may allocate at most (numpy's arrays are
# traced): a table of up to TABLE_CELLS cells (8 MB) while the grid is built, and a few
# arrays of up to MAX_CELLS_PER_BOX cells per box. Before query boxes were bounded, one
# example asked for 3.8 GiB, and others for more than the machine had.
GRID_EXAMPLE_BYTES = 64 * 2**20


@FAST
@given(bounds=box_rows(), data=st.data(), table=st.booleans(), few=st.integers(0, 3))
def test_the_grid_finds_what_an_strtree_of_its_boxes_finds(
    bounds: np.ndarray[Any, Any], data: st.DataObject, *, table: bool, few: int
) -> None:
    queries = data.draw(box_rows())
    points = _near(bounds, data)
    x, y = points[:, 0], points[:, 1]
    with pytest.MonkeyPatch.context() as patch, peak_memory() as peak:
        # Both ways to find a cell's boxes, and big boxes checked one by one or in a grid.
        patch.setattr(grid_module, "TABLE_CELLS", grid_module.TABLE_CELLS if table else 0)
        patch.setattr(grid_module, "FEW_BIG_BOXES", few)
        grid = BoxGrid(bounds)
        at_points = grid.query_points(x, y)
        in_boxes = grid.query_boxes(*queries.T)
    assert peak.bytes < GRID_EXAMPLE_BYTES
    assert _grid_pairs(at_points) == _tree_pairs(bounds, np.column_stack([x, y, x, y]))
    assert _grid_pairs(in_boxes) == _tree_pairs(bounds, queries)


def _city_boxes(per_city: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Boxes of 40-400 m (plane units) within 20 km of each city's centre."""
    rng = np.random.default_rng(7)
    rows = []
    for lon, lat in CITIES.values():
        cx, cy = to_plane(np.array([lon]), np.array([lat]))
        scale = math.cos(math.radians(lat))
        low = np.column_stack([cx, cy]) + rng.uniform(-20_000, 20_000, (per_city, 2)) / scale
        side = rng.uniform(40, 400, (per_city, 2)) / scale
        rows.append(np.hstack([low, low + side]))
    return np.vstack(rows)


def test_a_query_box_over_the_whole_world_costs_no_more_than_its_answer() -> None:
    # Small boxes in cities far apart make a grid of fine cells over a third of the world:
    # 6e10 of them, which a query box as wide as the world used to expand into one by one.
    bounds = _city_boxes(200)
    grid = BoxGrid(bounds)
    queries = np.array(
        [
            [-2.1e7, -3.1e7, 2.1e7, 3.1e7],  # the whole plane
            [-1e8, -1e8, 1e8, 1e8],  # beyond it
            [1.0e7, 2.0e6, 1.8e7, 5.0e6],  # East Asia
            [-9e6, -5e6, -3e6, 0.0],  # South America
            [1.0e6, 5.0e6, 2.0e6, 7.0e6],  # southern Germany
            [1.0e6, -6.0e6, 2.0e6, -5.0e6],  # the South Atlantic: nothing
        ]
    )
    with peak_memory() as peak:
        found = grid.query_boxes(*queries.T)
    assert peak.bytes < 2 * 2**20
    assert _grid_pairs(found) == _tree_pairs(bounds, queries)
    assert len(found[0]) == 2 * len(bounds) + 3 * 200


def test_an_empty_or_unbounded_query_box_is_answered_like_any_other() -> None:
    bounds = _city_boxes(50)
    grid = BoxGrid(bounds)
    inf, nan = math.inf, math.nan
    low_x = np.array([-inf, nan, 0.0, 1.0e7, -inf])
    low_y = np.array([-inf, 0.0, nan, 2.0e6, -inf])
    high_x = np.array([inf, 1e7, 1.0, 1.8e7, -inf])
    high_y = np.array([inf, 1e7, 1.0, 5.0e6, inf])
    with peak_memory() as peak:
        item, box = grid.query_boxes(low_x, low_y, high_x, high_y)
    assert peak.bytes < 2 * 2**20
    # Everything meets the unbounded box; nothing meets a box with a NaN side, nor one
    # wholly beyond the plane.
    pairs = _grid_pairs((item, box))
    assert {b for i, b in pairs if i == 0} == set(range(len(bounds)))
    assert {i for i, _ in pairs} == {0, 3}


def test_the_grid_holds_many_big_boxes_in_a_coarser_one() -> None:
    rng = np.random.default_rng(1)
    small = rng.uniform(0, 1_000, (200, 2))
    big = rng.uniform(-1e5, 0, (40, 2))
    bounds = np.vstack(
        [np.hstack([small, small + 50]), np.hstack([big, big + 2e5])]  # 40 boxes of ~4,000 cells
    )
    grid = BoxGrid(bounds)
    assert grid.coarser is not None
    x, y = rng.uniform(-1e5, 2e5, 2_000), rng.uniform(-1e5, 2e5, 2_000)
    assert _grid_pairs(grid.query_points(x, y)) == _tree_pairs(
        bounds, np.column_stack([x, y, x, y])
    )


# --- facets ------------------------------------------------------------------------------------


@FAST
@given(
    a=st.tuples(coordinate, coordinate),
    # Millimetres: a shorter segment (1e-154 m, whose squared length is 0) gives NaN, which
    # GEOS turns into an infinite distance and the facets skip; none is ever drawn.
    offsets=st.lists(
        st.tuples(st.integers(-5_000_000, 5_000_000), st.integers(-5_000_000, 5_000_000)).map(
            lambda d: (d[0] / 1_000, d[1] / 1_000)
        ),
        min_size=3,
        max_size=3,
    ),
    degenerate=st.booleans(),
)
def test_point_to_segment_is_the_distance_shapely_computes(
    a: tuple[float, float], offsets: list[tuple[float, float]], *, degenerate: bool
) -> None:
    (bdx, bdy), (pdx, pdy), (qdx, qdy) = offsets
    ax, ay = a
    bx, by = (ax, ay) if degenerate else (ax + bdx, ay + bdy)
    points = [(ax + pdx, ay + pdy), (bx + qdx, by + qdy), (ax, ay), (bx, by)]
    # On the segment too, where the distance is 0 or a rounding away from it.
    points.append((ax + (bx - ax) * 0.3, ay + (by - ay) * 0.3))
    px, py = np.array(points).T
    line = shapely.linestrings([[ax, ay], [bx, by]])
    expected = shapely.distance(line, shapely.points(px, py))
    got = point_to_segment(px, py, *(np.full(len(px), v) for v in (ax, ay, bx, by)))
    assert got.tolist() == expected.tolist()


def _areas() -> list[Geofence]:
    outer = [lonlat(-500, -500), lonlat(500, -500), lonlat(500, 500), lonlat(-500, 500)]
    hole = [lonlat(-100, -100), lonlat(-100, 100), lonlat(100, 100), lonlat(100, -100)]
    left = [lonlat(-900, -100), lonlat(-700, -100), lonlat(-700, 100), lonlat(-900, 100)]
    right = [lonlat(700, -100), lonlat(900, -50), lonlat(900, 100), lonlat(700, 100)]
    star = [lonlat(300 * math.cos(k * 0.5), 300 * math.sin(k * 0.5) + 900) for k in range(12)]
    shapes: list[dict[str, Any]] = [
        {"type": "Polygon", "coordinates": [[*outer, outer[0]], [*hole, hole[0]]]},
        {"type": "MultiPolygon", "coordinates": [[[*left, left[0]]], [[*right, right[0]]]]},
        {"type": "Polygon", "coordinates": [[*star, star[0]]]},
    ]
    fences = [
        Geofence(id=k + 1, name=f"area {k}", kind=GeofenceKind.RESTRICTED, geometry=shape)
        for k, shape in enumerate(shapes)
    ]
    return [*fences, corridor(9, [(-800, -800), (0, -600), (800, -900)], 40)]


def _columns(points: list[tuple[float, float]], accuracy: float = 5.0) -> FixColumns:
    lat, lon = np.array([at(east, north) for east, north in points], dtype=float).T
    x, y = to_plane(lon, lat)
    acc = np.full(len(points), accuracy)
    return FixColumns(lon=lon, lat=lat, acc=acc, x=x, y=y, scale=metres_per_unit(lat))


@FAST
@given(
    points=st.lists(
        st.tuples(st.floats(-1_200, 1_200), st.floats(-1_200, 1_400)), min_size=1, max_size=40
    ),
    reach_m=st.floats(0, 200),
)
def test_facet_distances_and_dwithin_are_shapelys(
    points: list[tuple[float, float]], reach_m: float
) -> None:
    index = FenceIndex(_areas())
    columns = _columns(points)
    fix = np.arange(len(points))
    # An area's facets are its rings, a corridor's its centre line.
    shapes = np.where(index.kinds == 0, index.boundaries, index.lines)
    for slot in range(index.size):
        slots = np.full(len(points), slot)
        plane = shapely.points(columns.x, columns.y)
        expected = shapely.distance(shapes[slot], plane)
        got = index.facets.distances(slots, columns.x, columns.y)
        assert got.tolist() == expected.tolist()
        if index.kinds[slot] != 0:
            continue
        reach = np.full(len(points), reach_m) / columns.scale
        outside = ~shapely.intersects(index.outlines[slot], plane)
        for shapes_of, wanted in ((index.boundaries, ~outside), (index.outlines, outside)):
            pick = np.flatnonzero(wanted)
            near = index._within(shapes_of, slots[pick], fix[pick], columns, reach[pick])
            assert (
                near.tolist() == shapely.dwithin(shapes_of[slot], plane[pick], reach[pick]).tolist()
            )


# --- shortcuts ---------------------------------------------------------------------------------

SERVICE_HALF_M = 3_000.0


def _city() -> list[Geofence]:
    """A service area far bigger than its other fences: vast, for the grid."""
    return [
        square(1, SERVICE_HALF_M, kind=GeofenceKind.SERVICE_AREA, enter_margin_m=20),
        circle(2, 120, east_m=400, enter_margin_m=5, exit_margin_m=15),
        circle(3, 80, east_m=-300, north_m=200),
        square(4, 150, lat0=at(0, 300)[0], enter_margin_m=10, exit_margin_m=10),
        corridor(5, [(-800, 500), (800, -500)], 40, enter_margin_m=5, exit_margin_m=5),
    ]


def _plain(index: FenceIndex) -> FenceIndex:
    index.vast = []
    return index


points = st.tuples(st.floats(-3_300, 3_300), st.floats(-3_300, 3_300))
tracks = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.one_of(points, st.tuples(st.floats(-500, 500), st.floats(-500, 500))),
        st.integers(1, 90),  # seconds since the vehicle's previous fix
        st.one_of(st.none(), st.floats(0, 80)),
    ),
    min_size=1,
    max_size=60,
)


def _fixes(track: list[tuple[str, tuple[float, float], int, float | None]]) -> list[Fix]:
    clocks: dict[str, int] = {}
    out = []
    for car, (east, north), step, accuracy in track:
        clocks[car] = clocks.get(car, 0) + step
        out.append(fix(east, north, clocks[car], car=car, accuracy_m=accuracy))
    return out


def _run(
    engine: GeofenceEngine, fixes: list[Fix], cuts: list[int]
) -> tuple[list[GeofenceTransition], list[GeofenceState]]:
    transitions: list[GeofenceTransition] = []
    start = 0
    for cut in [*sorted(cuts), len(fixes)]:
        transitions += engine.evaluate(fixes[start:cut])
        start = max(start, cut)
    states = sorted(engine.states(), key=lambda s: (s.vehicle_id, s.geofence_id))
    return transitions, states


def test_the_service_area_is_vast() -> None:
    assert FenceIndex(_city()).vast == [0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(track=tracks, cuts=st.lists(st.integers(0, 60), max_size=5))
def test_the_vast_fence_shortcut_changes_nothing(
    track: list[tuple[str, tuple[float, float], int, float | None]], cuts: list[int]
) -> None:
    fixes = _fixes(track)
    fast = _run(GeofenceEngine(FenceIndex(_city())), fixes, cuts)
    plain = _run(GeofenceEngine(_plain(FenceIndex(_city()))), fixes, cuts)
    assert fast == plain


def test_cars_deep_in_the_service_area_for_many_batches() -> None:
    # Most of their pairs are the service area's, left out batch after batch.
    fixes = []
    for second in range(0, 600, 5):
        for car, (east, north) in enumerate([(-900, -700), (-600, 600), (200, -300)]):
            fixes.append(
                fix(east + 3 * second, north - 2 * second, second, car=f"car-{car}", accuracy_m=4)
            )
    cuts = list(range(0, len(fixes), 12))
    fast = _run(GeofenceEngine(FenceIndex(_city())), fixes, cuts)
    assert fast == _run(GeofenceEngine(_plain(FenceIndex(_city()))), fixes, cuts)
    assert {t.geofence_id for t in fast[0]} >= {1, 2, 4}


def _query_every_first_step(steps: Any, inside_keys: Any) -> Any:
    # `Steps.far` without its shortcut: every long or first step looked up in the grid.
    return steps.queried(steps.usable & ~steps.near, inside_keys)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(track=tracks, cuts=st.lists(st.integers(0, 60), min_size=1, max_size=5))
def test_first_steps_judged_by_their_ends_fences_cross_as_when_looked_up(
    track: list[tuple[str, tuple[float, float], int, float | None]], cuts: list[int]
) -> None:
    fixes = _fixes(track)
    fast = _run(GeofenceEngine(_city()), fixes, cuts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crossing_module.Steps, "far", _query_every_first_step)
        looked_up = _run(GeofenceEngine(_city()), fixes, cuts)
    assert fast == looked_up


def test_a_sparse_grid_finds_the_same_fences() -> None:
    fixes = _fixes([("a", (east, 0.0), 5, 3.0) for east in range(-3_200, 3_200, 45)])
    dense = _run(GeofenceEngine(_city()), fixes, [40, 90])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grid_module, "TABLE_CELLS", 0)
        sparse = _run(GeofenceEngine(_city()), fixes, [40, 90])
    assert sparse == dense
    assert dense[0]
