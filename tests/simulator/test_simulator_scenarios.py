"""Scenarios and seeds: each scenario's effect shows in the cars' simulated state, repeatably.

These run the world alone, without agents or a broker: what an agent would report is what
its `SimCar` says, so checking the SimCars checks the fixes.
"""

import pytest

from simulator import scenarios
from simulator.area import Area, load_area
from simulator.scenarios import SCENARIOS, NetworkSchedule, ScenarioError, assign_roles
from simulator.world import BOARDING, LOW_ENERGY_PCT, Phase, World, WorldEvent

FLEET = 30


@pytest.fixture(scope="module")
def shanghai() -> Area:
    return load_area("shanghai")


def _track(world: World, seconds: float) -> list[tuple[float, ...]]:
    rows = []
    while world.time_s < seconds:
        world.step()
        for vehicle in world.vehicles:
            status = vehicle.car.status()
            rows.append(
                (
                    *vehicle.point,
                    vehicle.speed_kmh,
                    status.locked,
                    status.doors_open,
                    status.engine_on,
                )
            )
    return rows


def _events(world: World, kind: str) -> list[WorldEvent]:
    return [event for event in world.events if event.kind == kind]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_seed_same_tracks_and_events(shanghai: Area, scenario: str) -> None:
    one = World(shanghai.network, FLEET, seed=42, scenario=scenario)
    two = World(shanghai.network, FLEET, seed=42, scenario=scenario)
    assert _track(one, 240) == _track(two, 240)
    assert list(one.events) == list(two.events)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_another_seed_gives_other_tracks(shanghai: Area, scenario: str) -> None:
    one = World(shanghai.network, FLEET, seed=1, scenario=scenario)
    two = World(shanghai.network, FLEET, seed=2, scenario=scenario)
    assert _track(one, 120) != _track(two, 120)


def test_a_vehicle_drives_the_same_whatever_the_fleet_size(shanghai: Area) -> None:
    small = World(shanghai.network, 3, seed=9)
    large = World(shanghai.network, 50, seed=9)
    for _ in range(300):
        small.step()
        large.step()
        assert small.vehicles[2].point == large.vehicles[2].point


def test_unknown_scenario_is_refused(shanghai: Area) -> None:
    with pytest.raises(ScenarioError, match="leave-service-area"):
        World(shanghai.network, 3, scenario="meteor-strike")


def test_normal_cars_stay_inside_and_online(shanghai: Area) -> None:
    world = World(shanghai.network, FLEET, seed=3, scenario="normal")
    area = shanghai.service_area
    for _ in range(1800):
        world.step()
        for vehicle in world.vehicles:
            assert area.contains(vehicle.point)
            status = vehicle.car.status()
            assert not (status.locked and status.doors_open)
            assert not (vehicle.phase is Phase.DRIVING and status.locked)
    assert all(world.link_up)
    assert not _events(world, "network_down")
    assert min(v.energy for v in world.vehicles) > LOW_ENERGY_PCT


def test_leave_service_area(shanghai: Area) -> None:
    world = World(shanghai.network, FLEET, seed=4, scenario="leave-service-area")
    area = shanghai.service_area
    leavers = {i for i, v in enumerate(world.vehicles) if v.role.leave_after_s is not None}
    assert len(leavers) == round(FLEET * scenarios.LEAVE_FRACTION)
    went_out: set[int] = set()
    for _ in range(900):
        world.step()
        for vehicle in world.vehicles:
            if not area.contains(vehicle.point):
                assert vehicle.index in leavers
                went_out.add(vehicle.index)
    assert went_out == leavers
    departures = _events(world, "leaving_service_area")
    assert {e.vehicle for e in departures} == leavers
    # They board within LEAVE_WITHIN_S and drive off once boarded.
    assert all(e.t <= scenarios.LEAVE_WITHIN_S + BOARDING[-1][0] + 1 for e in departures)


def test_offline_burst_cuts_a_third_then_restores(shanghai: Area) -> None:
    calls: list[tuple[float, int, bool]] = []
    world = World(shanghai.network, FLEET, seed=5, scenario="offline-burst")
    world.on_network = lambda index, up: calls.append((world.time_s, index, up))
    world.run_until(scenarios.OFFLINE_FIRST_S - 1)
    assert all(world.link_up)
    world.run_until(scenarios.OFFLINE_FIRST_S + 1)
    down = [i for i, up in enumerate(world.link_up) if not up]
    assert len(down) == round(FLEET * scenarios.OFFLINE_FRACTION)
    world.run_until(scenarios.OFFLINE_FIRST_S + scenarios.OFFLINE_FOR_S + 1)
    assert all(world.link_up)
    assert sorted(i for _, i, up in calls if not up) == down
    assert sorted(i for _, i, up in calls if up) == down
    # Cars cut off keep driving: their fixes pile up in their queues.
    assert any(world.vehicles[i].phase is Phase.DRIVING for i in down)
    # The next burst comes OFFLINE_EVERY_S later.
    world.run_until(scenarios.OFFLINE_FIRST_S + scenarios.OFFLINE_EVERY_S + 1)
    assert world.link_up.count(False) == len(down)


def test_door_ajar_while_parked_and_locked(shanghai: Area) -> None:
    world = World(shanghai.network, FLEET, seed=6, scenario="door-ajar")
    chosen = [v for v in world.vehicles if v.role.door_ajar]
    assert len(chosen) == round(FLEET * scenarios.DOOR_AJAR_FRACTION)
    world.run_until(scenarios.DOOR_AJAR_AT_S + 1)
    for vehicle in chosen:
        status = vehicle.car.status()
        assert status.locked
        assert status.doors_open
        assert not status.engine_on
        assert vehicle.phase is Phase.PARKED
    world.run_until(scenarios.DOOR_AJAR_AT_S + scenarios.DOOR_AJAR_FOR_S + 1)
    assert not any(v.car.status().doors_open for v in chosen)
    ajar = {e.vehicle for e in _events(world, "door_ajar")}
    assert ajar == {v.index for v in chosen}


def test_low_fuel_falls_below_ten_percent(shanghai: Area) -> None:
    world = World(shanghai.network, FLEET, seed=7, scenario="low-fuel")
    chosen = [v for v in world.vehicles if v.role.low_fuel]
    assert len(chosen) == round(FLEET * scenarios.LOW_FUEL_FRACTION)
    world.run_until(90)
    for vehicle in chosen:
        status = vehicle.car.status()
        levels = [level for level in (status.fuel_pct, status.battery_pct) if level is not None]
        assert levels
        assert all(level < LOW_ENERGY_PCT for level in levels)
    assert {e.vehicle for e in _events(world, "low_fuel")} == {v.index for v in chosen}
    others = [v for v in world.vehicles if not v.role.low_fuel]
    assert all(v.energy > LOW_ENERGY_PCT for v in others)


def test_theft_moves_a_locked_car_with_the_engine_off(shanghai: Area) -> None:
    world = World(shanghai.network, FLEET, seed=8, scenario="theft")
    chosen = [v for v in world.vehicles if v.role.theft_at_s is not None]
    assert len(chosen) == round(FLEET * scenarios.THEFT_FRACTION)
    starts = {v.index: v.point for v in chosen}
    moved_while_locked: set[int] = set()
    for _ in range(int(scenarios.THEFT_WITHIN_S) + 60):
        world.step()
        for vehicle in chosen:
            status = vehicle.car.status()
            assert status.locked
            assert not status.engine_on
            assert vehicle.speed_kmh <= scenarios.TOW_SPEED_KMH + 1e-6
            position = vehicle.car.position()
            if position is not None and position.speed_kmh > 0:
                moved_while_locked.add(vehicle.index)
    assert moved_while_locked == set(starts)
    assert all(v.point != starts[v.index] for v in chosen)
    assert {e.vehicle for e in _events(world, "theft_started")} == set(starts)


def test_flaky_network_drops_links_at_random_for_seconds(shanghai: Area) -> None:
    world = World(shanghai.network, FLEET, seed=9, scenario="flaky-network")
    world.run_until(600)
    downs = _events(world, "network_down")
    ups = _events(world, "network_up")
    assert len({e.vehicle for e in downs}) > FLEET // 2
    # Each outage lasts FLAKY_DOWN_MIN_S to FLAKY_DOWN_MAX_S.
    last_down: dict[int, float] = {}
    for event in sorted(downs + ups, key=lambda e: (e.t, e.kind)):
        if event.kind == "network_down":
            last_down[event.vehicle] = event.t
        else:
            length = event.t - last_down.pop(event.vehicle)
            assert scenarios.FLAKY_DOWN_MIN_S <= length <= scenarios.FLAKY_DOWN_MAX_S


def test_network_schedule_is_deterministic() -> None:
    one = NetworkSchedule("flaky-network", 20, 5)
    two = NetworkSchedule("flaky-network", 20, 5)
    assert one.due(300) == two.due(300)
    assert NetworkSchedule("normal", 20, 5).due(10_000) == []


def test_roles_pick_at_least_one_car() -> None:
    roles = assign_roles("theft", 1, 0)
    assert roles[0].theft_at_s is not None
    assert assign_roles("normal", 0, 0) == []
