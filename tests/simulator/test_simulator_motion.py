"""The motion model: cars stay on roads, at plausible speeds, stop at lights and park."""

import itertools
import math
import random

import pytest

from simulator.area import Area, load_area
from simulator.geo import LocalFrame
from simulator.motion import ACCEL_MS2, RED_MIN_S, Drive, DriveEvent
from simulator.roads import ROAD_SPEEDS_KMH
from simulator.world import SPEED_FACTOR_RANGE, Phase, World


@pytest.fixture(scope="module")
def shanghai() -> Area:
    return load_area("shanghai")


class AlwaysRed(random.Random):
    """Every light is red, for the shortest wait."""

    def random(self) -> float:
        return 0.0

    def uniform(self, a: float, b: float) -> float:  # noqa: ARG002 - Random's signature
        return a


def _distance_to_polyline(frame: LocalFrame, point, polyline) -> float:
    px, py = frame.to_xy(point)
    best = math.inf
    for p, q in itertools.pairwise(polyline):
        (ax, ay), (bx, by) = frame.to_xy(p), frame.to_xy(q)
        dx, dy = bx - ax, by - ay
        span = dx * dx + dy * dy
        t = 0.0 if span == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / span))
        best = min(best, math.hypot(px - (ax + t * dx), py - (ay + t * dy)))
    return best


def test_cars_stay_on_roads_at_plausible_speeds(shanghai: Area) -> None:
    world = World(shanghai.network, 40, seed=11)
    frame = LocalFrame(shanghai.service_area.centroid())
    edges = set(map(id, shanghai.network.edges))
    fastest = max(ROAD_SPEEDS_KMH.values()) * SPEED_FACTOR_RANGE[1]
    previous = [0.0] * len(world.vehicles)
    driving_speeds = []
    for tick in range(900):
        world.step()
        for vehicle in world.vehicles:
            speed = vehicle.speed_kmh
            assert 0.0 <= speed <= fastest + 1e-6
            # No faster than the car can accelerate in one tick (braking may snap to a stop).
            assert speed - previous[vehicle.index] <= ACCEL_MS2 * 3.6 * world.tick_s + 1e-6
            previous[vehicle.index] = speed
            if vehicle.drive is not None and tick % 7 == 0:
                edge = vehicle.drive.leg.step.edge
                assert id(edge) in edges
                assert _distance_to_polyline(frame, vehicle.point, edge.points) < 0.5
                driving_speeds.append(speed)
    moving = [s for s in driving_speeds if s > 1]
    assert 20 < sum(moving) / len(moving) < 60  # city traffic, lights included


def test_cars_stop_at_lights_and_wait(shanghai: Area) -> None:
    network = shanghai.network
    lit = next(
        (a, b)
        for a in network.inside_nodes
        for b in network.inside_nodes
        if (route := network.route(a, b, stay_inside=True))
        and any(network.has_light(x.end, x.edge, y.edge) for x, y in itertools.pairwise(route))
    )
    route = network.route(*lit, stay_inside=True)
    assert route
    drive = Drive(network, route, AlwaysRed())
    now, stopped_at = 0.0, None
    while True:
        now += 1.0
        event = drive.advance(now, 1.0)
        if event is DriveEvent.RED_LIGHT:
            assert drive.speed_ms == 0.0
            stopped_at = now
        if event is DriveEvent.GREEN_LIGHT:
            assert stopped_at is not None
            assert now - stopped_at >= RED_MIN_S
            break
        assert now < 3600, "never met a red light"
    assert drive.leg_index > 0


def test_a_drive_arrives_at_rest_at_the_end(shanghai: Area) -> None:
    network = shanghai.network
    route = network.route(network.inside_nodes[0], network.inside_nodes[-1], stay_inside=True)
    assert route
    drive = Drive(network, route, random.Random(1))  # noqa: S311 - simulation
    now = 0.0
    while not drive.finished:
        now += 1.0
        drive.advance(now, 1.0)
        assert now < 7200
    (lon, lat), _ = drive.position()
    assert (lon, lat) == network.nodes[route[-1].end]
    assert drive.speed_ms == 0.0
    # Long enough to be plausible: not faster than the limit all the way.
    assert now > drive.length_m / (max(ROAD_SPEEDS_KMH.values()) / 3.6)


def test_a_car_parks_locks_and_drives_off_again(shanghai: Area) -> None:
    world = World(shanghai.network, 30, seed=5)
    seen: dict[Phase, set[tuple[bool, bool]]] = {phase: set() for phase in Phase}
    odometers = [v.car.status().odometer_km for v in world.vehicles]
    for _ in range(1200):
        world.step()
        for vehicle in world.vehicles:
            status = vehicle.car.status()
            seen[vehicle.phase].add((status.locked, status.engine_on))
    assert seen[Phase.DRIVING] == {(False, True)}
    assert (True, False) in seen[Phase.PARKED]
    assert world.counts["departed"] > 0
    assert world.counts["arrived"] > 0
    driven = [v.car.status().odometer_km - odometers[v.index] for v in world.vehicles]
    assert max(driven) > 1.0
    assert min(driven) >= 0.0


def test_energy_falls_with_distance(shanghai: Area) -> None:
    world = World(shanghai.network, 20, seed=2)
    start = [v.energy for v in world.vehicles]
    world.run_until(600)
    used = [s - v.energy for s, v in zip(start, world.vehicles, strict=True)]
    assert all(u >= 0 for u in used)
    assert max(used) > 0.1
    for vehicle in world.vehicles:
        status = vehicle.car.status()
        assert status.fuel_pct is not None or status.battery_pct is not None


def test_gps_is_lost_in_tunnels(shanghai: Area) -> None:
    network = shanghai.network
    tunnel = next(edge for edge in network.edges if edge.kind == "tunnel")
    world = World(network, 1, seed=0)
    vehicle = world.vehicles[0]
    vehicle.node = tunnel.a
    route = network.route(tunnel.a, tunnel.b, stay_inside=True)
    assert route
    assert [step.edge for step in route] == [tunnel]
    vehicle.drive = Drive(network, route, vehicle.rng)
    vehicle.phase = Phase.DRIVING
    vehicle.role.door_ajar = False
    seen_without_fix = False
    while vehicle.phase is Phase.DRIVING:
        world.step()
        if vehicle.drive is not None and vehicle.drive.offset > 0:
            assert vehicle.car.position() is None
            seen_without_fix = True
    assert seen_without_fix


def test_an_immobilized_car_stays_parked(shanghai: Area) -> None:
    world = World(shanghai.network, 10, seed=3)
    for vehicle in world.vehicles:
        vehicle.car.immobilized = True
        vehicle.phase = Phase.PARKED
        vehicle.phase_until = 0.0
    world.run_until(120)
    assert all(v.phase is Phase.PARKED for v in world.vehicles)
    assert world.counts["immobilized"] >= 10
