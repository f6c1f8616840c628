"""The road network vehicles drive on: junctions joined by roads, with speeds and lights.

Roads come from GeoJSON LineStrings. Two roads meet where they share a vertex (same
coordinates to about 10 cm); roads that cross without one pass over each other, like an
elevated road over a street. A junction where three or more road ends meet has traffic
lights, except between two elevated or bridge roads (interchanges have none).
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from simulator.geo import LocalFrame, LonLat, Polygon, distance_m

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

# Speed limits by road kind, km/h: Shanghai's elevated roads are signed 60-80 but crawl at
# rush hour; ground arterials are 40-50, side streets 30.
ROAD_SPEEDS_KMH: Final[dict[str, float]] = {
    "elevated": 60.0,
    "bridge": 50.0,
    "arterial": 45.0,
    "tunnel": 40.0,
    "street": 30.0,
}
DEFAULT_KIND: Final = "arterial"
# Kinds whose junctions with each other are interchanges, not signalled crossings.
GRADE_SEPARATED: Final = frozenset({"elevated", "bridge"})
# Kinds under ground or under water: GPS receivers lose the sky there.
NO_SKY: Final = frozenset({"tunnel"})
# Coordinates are joined when equal to this many decimals: 1e-6 degrees is about 10 cm.
JOIN_DECIMALS: Final = 6
# A road out of the service area added when a map has none, so vehicles can leave it.
EXIT_SPUR_M: Final = 1500.0
EXIT_SPURS: Final = 4


class RoadNetworkError(ValueError):
    """The map has no usable roads."""


@dataclass(frozen=True, slots=True)
class Edge:
    """A road between two junctions, drawn as a polyline from `a` to `b`."""

    id: int
    a: int
    b: int
    points: tuple[LonLat, ...]
    length_m: float
    kind: str
    name: str

    @property
    def speed_kmh(self) -> float:
        """The speed limit."""
        return ROAD_SPEEDS_KMH.get(self.kind, ROAD_SPEEDS_KMH[DEFAULT_KIND])

    @property
    def has_sky(self) -> bool:
        """Whether a GPS receiver gets a fix on this road."""
        return self.kind not in NO_SKY

    def other(self, node: int) -> int:
        """The far end of the road seen from `node`."""
        return self.b if node == self.a else self.a


@dataclass(frozen=True, slots=True)
class Step:
    """One edge of a route, driven from `start` to the edge's other end."""

    edge: Edge
    start: int

    @property
    def end(self) -> int:
        """The junction this step arrives at."""
        return self.edge.other(self.start)

    @property
    def points(self) -> tuple[LonLat, ...]:
        """The polyline in driving order."""
        return self.edge.points if self.start == self.edge.a else self.edge.points[::-1]


@dataclass(slots=True)
class RoadNetwork:
    """Junctions (nodes) and roads (edges); every node reaches every other."""

    nodes: list[LonLat]
    edges: list[Edge]
    service_area: Polygon
    adjacency: list[list[Edge]] = field(init=False)
    inside_edge: list[bool] = field(init=False)
    inside_nodes: list[int] = field(init=False)
    outside_nodes: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.adjacency = [[] for _ in self.nodes]
        for edge in self.edges:
            self.adjacency[edge.a].append(edge)
            self.adjacency[edge.b].append(edge)
        area = self.service_area
        self.inside_edge = [all(area.contains(p) for p in _sampled(e)) for e in self.edges]
        self.inside_nodes = _largest_component(
            len(self.nodes), [e for e in self.edges if self.inside_edge[e.id]]
        )
        inside = set(self.inside_nodes)
        self.outside_nodes = [
            n
            for n in range(len(self.nodes))
            if n not in inside and not area.contains(self.nodes[n])
        ]

    def degree(self, node: int) -> int:
        """How many road ends meet at a junction."""
        return len(self.adjacency[node])

    def has_light(self, node: int, arriving: Edge, leaving: Edge) -> bool:
        """Whether a vehicle going from `arriving` to `leaving` meets traffic lights here."""
        if self.degree(node) < 3:
            return False
        return not (arriving.kind in GRADE_SEPARATED and leaving.kind in GRADE_SEPARATED)

    def route(self, start: int, goal: int, *, stay_inside: bool) -> list[Step] | None:
        """The quickest route at speed limits, or None; `stay_inside` keeps to the service area."""
        best = {start: 0.0}
        came: dict[int, Step] = {}
        frontier = [(0.0, start)]
        while frontier:
            cost, node = heapq.heappop(frontier)
            if node == goal:
                break
            if cost > best[node]:
                continue
            for edge in self.adjacency[node]:
                if stay_inside and not self.inside_edge[edge.id]:
                    continue
                nxt = edge.other(node)
                new_cost = cost + edge.length_m / edge.speed_kmh
                if new_cost < best.get(nxt, math.inf):
                    best[nxt] = new_cost
                    came[nxt] = Step(edge, node)
                    heapq.heappush(frontier, (new_cost, nxt))
        if goal not in best:
            return None
        steps: list[Step] = []
        node = goal
        while node != start:
            step = came[node]
            steps.append(step)
            node = step.start
        steps.reverse()
        return steps

    def total_length_m(self) -> float:
        """The length of every road, counted once."""
        return sum(e.length_m for e in self.edges)


def _sampled(edge: Edge) -> Iterable[LonLat]:
    """The edge's vertices and segment midpoints: enough to tell whether it leaves an area."""
    yield edge.points[0]
    for p, q in itertools.pairwise(edge.points):
        yield ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
        yield q


def _largest_component(node_count: int, edges: Sequence[Edge]) -> list[int]:
    """The nodes of the largest connected component of the graph, ascending."""
    parent = list(range(node_count))

    def find(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for edge in edges:
        parent[find(edge.a)] = find(edge.b)
    groups: dict[int, list[int]] = {}
    for edge in edges:
        for n in (edge.a, edge.b):
            groups.setdefault(find(n), [])
    for n in range(node_count):
        root = find(n)
        if root in groups:
            groups[root].append(n)
    largest: list[int] = []
    for group in groups.values():
        if len(group) > len(largest):
            largest = group
    return sorted(largest)


@dataclass(frozen=True, slots=True)
class Road:
    """A road as drawn on a map, before it is cut into edges at junctions."""

    points: tuple[LonLat, ...]
    kind: str = DEFAULT_KIND
    name: str = ""


def build_network(roads: Sequence[Road], service_area: Polygon) -> RoadNetwork:
    """Join roads at shared vertices into a graph and keep its largest connected part."""
    weights = _vertex_weights(roads)
    node_ids: dict[LonLat, int] = {}
    nodes: list[LonLat] = []
    edges: list[Edge] = []

    def node_of(point: LonLat) -> int:
        if point not in node_ids:
            node_ids[point] = len(nodes)
            nodes.append(point)
        return node_ids[point]

    for road in roads:
        points = _joinable(road.points)
        if len(points) < 2:
            continue
        piece: list[LonLat] = [points[0]]
        for point in points[1:]:
            piece.append(point)
            if weights[point] > 1:
                _add_edge(edges, node_of(piece[0]), node_of(piece[-1]), piece, road)
                piece = [point]
    return _connected(nodes, edges, service_area)


def _joinable(points: Sequence[LonLat]) -> list[LonLat]:
    """Vertices rounded to the joining precision, repeats removed (they draw nothing)."""
    out: list[LonLat] = []
    for point in points:
        key = (round(point[0], JOIN_DECIMALS), round(point[1], JOIN_DECIMALS))
        if not out or out[-1] != key:
            out.append(key)
    return out


def _vertex_weights(roads: Sequence[Road]) -> dict[LonLat, int]:
    """How many road pieces touch each vertex; more than one makes it a junction."""
    weights: dict[LonLat, int] = {}
    for road in roads:
        points = _joinable(road.points)
        for index, point in enumerate(points):
            # Ends count twice, so that a road's end is always a junction.
            weight = 2 if index in (0, len(points) - 1) else 1
            weights[point] = weights.get(point, 0) + weight
    return weights


def _add_edge(edges: list[Edge], a: int, b: int, points: list[LonLat], road: Road) -> None:
    length = sum(distance_m(p, q) for p, q in itertools.pairwise(points))
    if a == b or length <= 0.0:
        return  # a loop back to the same junction adds no route
    edges.append(Edge(len(edges), a, b, tuple(points), length, road.kind, road.name))


def _connected(nodes: list[LonLat], edges: list[Edge], service_area: Polygon) -> RoadNetwork:
    """Renumber the largest connected component into a network."""
    keep = _largest_component(len(nodes), edges)
    if len(keep) < 2:
        raise RoadNetworkError("the map has no two junctions joined by a road")
    renumber = {old: new for new, old in enumerate(keep)}
    kept_edges: list[Edge] = []
    for edge in edges:
        if edge.a in renumber and edge.b in renumber:
            kept_edges.append(
                Edge(
                    len(kept_edges),
                    renumber[edge.a],
                    renumber[edge.b],
                    edge.points,
                    edge.length_m,
                    edge.kind,
                    edge.name,
                )
            )
    network = RoadNetwork([nodes[n] for n in keep], kept_edges, service_area)
    if not network.inside_nodes:
        raise RoadNetworkError("no road lies inside the service area")
    if not network.outside_nodes:
        network = _with_exit_spurs(network)
    return network


def _with_exit_spurs(network: RoadNetwork) -> RoadNetwork:
    """Add straight roads leading out of the service area from its outermost junctions."""
    area = network.service_area
    frame = LocalFrame(area.centroid())
    by_distance = sorted(
        network.inside_nodes,
        key=lambda n: -math.hypot(*frame.to_xy(network.nodes[n])),
    )
    nodes = list(network.nodes)
    edges = list(network.edges)
    for node in by_distance[:EXIT_SPURS]:
        x, y = frame.to_xy(nodes[node])
        norm = math.hypot(x, y) or 1.0
        reach = EXIT_SPUR_M
        end = frame.to_lonlat(x + x / norm * reach, y + y / norm * reach)
        while area.contains(end):
            reach *= 2
            end = frame.to_lonlat(x + x / norm * reach, y + y / norm * reach)
        end = (round(end[0], JOIN_DECIMALS), round(end[1], JOIN_DECIMALS))
        nodes.append(end)
        _add_edge(edges, node, len(nodes) - 1, [nodes[node], end], Road((), "arterial", "exit"))
    return RoadNetwork(nodes, edges, area)


def grid_roads(bbox: tuple[float, float, float, float], spacing_m: float) -> list[Road]:
    """Straight streets every `spacing_m` across a bounding box, every fourth an arterial."""
    min_lon, min_lat, max_lon, max_lat = bbox
    frame = LocalFrame((min_lon, min_lat))
    width, height = frame.to_xy((max_lon, max_lat))
    columns = max(2, round(width / spacing_m) + 1)
    rows = max(2, round(height / spacing_m) + 1)
    lons = [min_lon + (max_lon - min_lon) * i / (columns - 1) for i in range(columns)]
    lats = [min_lat + (max_lat - min_lat) * j / (rows - 1) for j in range(rows)]
    roads: list[Road] = []
    for j, lat in enumerate(lats):
        kind = "arterial" if j % 4 == 0 else "street"
        roads.append(Road(tuple((lon, lat) for lon in lons), kind, f"Street {j + 1}"))
    for i, lon in enumerate(lons):
        kind = "arterial" if i % 4 == 0 else "street"
        roads.append(Road(tuple((lon, lat) for lat in lats), kind, f"Avenue {i + 1}"))
    return roads
