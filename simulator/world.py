"""The simulated world: every vehicle's life (park, unlock, drive, park, lock) on one clock.

`World.step()` advances all vehicles by one fixed tick and writes what changed into each
vehicle's `SimCar`, which its agent reads like real sensors. Because ticks are fixed and
every random draw comes from a generator seeded from `--seed` (one per vehicle, one per
scenario), the same seed gives the same tracks and the same scenario events; only the
moments a tick runs depend on the wall clock.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from simulator.motion import Drive, DriveEvent
from simulator.scenarios import (
    DOOR_AJAR_AT_S,
    DOOR_AJAR_FOR_S,
    LOW_FUEL_DRAIN_PCT_S,
    LOW_FUEL_FLOOR_PCT,
    LOW_FUEL_START_PCT,
    OUTSIDE_DWELL_S,
    TOW_SPEED_KMH,
    NetworkSchedule,
    Role,
    assign_roles,
)
from vehicle_agent.backends.sim import SimCar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from simulator.geo import LonLat
    from simulator.roads import RoadNetwork, Step

# Parked between trips for half a minute to three minutes: short, so a demo shows motion.
PARK_MIN_S: Final = 30.0
PARK_MAX_S: Final = 180.0
# At the start about half the fleet is already under way, as in a city at any hour; the
# rest set off within a minute, so a short run still sees most cars move.
START_DRIVING_SHARE: Final = 0.5
FIRST_DEPARTURE_MAX_S: Final = 60.0
# Boarding: unlock, open the door, close it, start the engine, then drive off.
BOARDING: Final = (
    (0.0, {"locked": False}),
    (2.0, {"doors_open": True}),
    (5.0, {"doors_open": False}),
    (7.0, {"engine_on": True}),
)
# Alighting: engine off, door open, door shut, lock.
ALIGHTING: Final = (
    (0.0, {"engine_on": False}),
    (3.0, {"doors_open": True}),
    (6.0, {"doors_open": False}),
    (8.0, {"locked": True}),
)
# A car with a door left ajar locks with it open; it is shut DOOR_AJAR_FOR_S later.
ALIGHTING_DOOR_AJAR: Final = (
    (0.0, {"engine_on": False}),
    (3.0, {"doors_open": True}),
    (8.0, {"locked": True}),
)
# Energy use per km: a 50 l tank at 7.5 l/100 km; a 60 kWh battery at 15 kWh/100 km.
FUEL_PCT_PER_KM: Final = 0.15
BATTERY_PCT_PER_KM: Final = 0.25
# Below this, a normal car fills up (or charges) when it parks; the warning level is 10 %.
REFUEL_BELOW_PCT: Final = 20.0
REFUEL_TO_PCT: Final = 95.0
LOW_ENERGY_PCT: Final = 10.0
# Energy is written to the car when it changed by this much: a gauge moves in steps.
ENERGY_STEP_PCT: Final = 0.1
# Mix of drive trains in a car-sharing fleet: mostly petrol, some electric, a few hybrids.
ELECTRIC_SHARE: Final = 0.2
HYBRID_SHARE: Final = 0.1
# Drivers differ: some keep 15 % under the limit, some 5 % over.
SPEED_FACTOR_RANGE: Final = (0.85, 1.05)
# Consumer GPS in a city: 3-8 m horizontal accuracy.
ACCURACY_RANGE_M: Final = (3.0, 8.0)
# Tries to find a destination reachable from where the car stands.
DESTINATION_TRIES: Final = 8
# The event log keeps the newest entries only, so a week-long demo does not grow forever.
MAX_EVENTS: Final = 100_000


class Drivetrain(StrEnum):
    """What a car runs on, named as the fleet's `fuel_type`; it decides what its gauges say.

    Petrol and diesel cars report `fuel_pct`, electric ones `battery_pct`, hybrids both.
    """

    PETROL = "petrol"
    DIESEL = "diesel"
    ELECTRIC = "electric"
    HYBRID = "hybrid"


def _drawn_drivetrain(draw: float) -> Drivetrain:
    """The fleet mix's drivetrain for a uniform draw in [0, 1)."""
    if draw < ELECTRIC_SHARE:
        return Drivetrain.ELECTRIC
    if draw < ELECTRIC_SHARE + HYBRID_SHARE:
        return Drivetrain.HYBRID
    return Drivetrain.PETROL


class Phase(StrEnum):
    """Where a vehicle is in its life cycle."""

    PARKED = "parked"
    BOARDING = "boarding"
    DRIVING = "driving"
    ALIGHTING = "alighting"
    TOWED = "towed"
    STOLEN = "stolen"


@dataclass(frozen=True, slots=True)
class WorldEvent:
    """Something a scenario or a vehicle's life cycle did, for tests and the summary."""

    t: float
    vehicle: int
    kind: str
    detail: str = ""


class VehicleSim:
    """One vehicle's behaviour; its sensors are `car`."""

    def __init__(  # noqa: PLR0913 - the vehicle's place in its world
        self,
        world: World,
        index: int,
        role: Role,
        rng: random.Random,
        start: int,
        *,
        drivetrain: Drivetrain | None = None,
    ) -> None:
        self.world = world
        self.index = index
        self.role = role
        self.rng = rng
        self.node = start
        self.point: LonLat = world.network.nodes[start]
        self.heading = rng.uniform(0.0, 360.0)
        self.speed_kmh = 0.0
        self.speed_factor = rng.uniform(*SPEED_FACTOR_RANGE)
        # Drawn even when the drivetrain is given, so a seed gives the same routes either way.
        drawn = _drawn_drivetrain(rng.random())
        self.drivetrain = drivetrain or drawn
        self.electric = self.drivetrain is Drivetrain.ELECTRIC
        self.hybrid = self.drivetrain is Drivetrain.HYBRID
        self.energy = LOW_FUEL_START_PCT if role.low_fuel else rng.uniform(35.0, 95.0)
        self._reported_energy = self.energy
        self.phase = Phase.PARKED
        self.phase_until = rng.uniform(0.0, FIRST_DEPARTURE_MAX_S)
        self.script: deque[tuple[float, dict[str, Any]]] = deque()
        self.drive: Drive | None = None
        self.fix_lost = False
        self.left_area = False
        lon, lat = self.point
        fuel = None if self.electric else round(self.energy, 1)
        battery = round(self.energy, 1) if self.electric or self.hybrid else None
        self.car = SimCar(
            lat=lat,
            lon=lon,
            heading=self.heading,
            fuel_pct=fuel,
            battery_pct=battery,
            odometer_km=round(rng.uniform(1_000.0, 80_000.0), 1),
        )
        self._plan_start()

    def _plan_start(self) -> None:
        role = self.role
        if self.rng.random() < START_DRIVING_SHARE:
            # Boarded already: drive off at the first tick.
            self.car.update(locked=False, engine_on=True)
            self.phase = Phase.BOARDING
            self.phase_until = 0.0
        if role.leave_after_s is None and not role.door_ajar and role.theft_at_s is None:
            if role.low_fuel:
                self.phase_until = self.rng.uniform(0.0, 5.0)
            return
        # These roles begin parked and locked, whatever the draw above said.
        self.car.update(locked=True, engine_on=False)
        self.phase = Phase.PARKED
        if role.leave_after_s is not None:
            self.phase_until = role.leave_after_s
        if role.door_ajar:
            self._schedule(DOOR_AJAR_AT_S, {"doors_open": True})
            self._schedule(DOOR_AJAR_AT_S + DOOR_AJAR_FOR_S, {"doors_open": False})
            self.phase_until = DOOR_AJAR_AT_S + DOOR_AJAR_FOR_S + PARK_MIN_S
        if role.theft_at_s is not None:
            self.phase_until = float("inf")  # parked, locked, until the thieves come

    # --- the clock ------------------------------------------------------------------------

    def tick(self, now: float, dt: float) -> None:
        """Advance this vehicle to time `now`."""
        while self.script and self.script[0][0] <= now:
            _, changes = self.script.popleft()
            self._set(now, changes)
        phase = self.phase
        if phase is Phase.PARKED:
            self._parked(now)
        elif phase is Phase.BOARDING:
            if now >= self.phase_until:
                self._depart(now)
        elif phase in (Phase.DRIVING, Phase.TOWED):
            self._drive(now, dt)
        elif phase is Phase.ALIGHTING and now >= self.phase_until:
            self._park(now)

    def _parked(self, now: float) -> None:
        if self.role.theft_at_s is not None and now >= self.role.theft_at_s:
            self._start_tow(now)
        elif now >= self.phase_until:
            self._board(now)

    def _park(self, now: float) -> None:
        self.phase = Phase.PARKED
        dwell = self.rng.uniform(PARK_MIN_S, PARK_MAX_S)
        if self.role.door_ajar:
            dwell = max(dwell, DOOR_AJAR_FOR_S + PARK_MIN_S)
        if not self.world.network_inside(self.node):
            dwell = max(dwell, OUTSIDE_DWELL_S)
        self.phase_until = now + dwell

    # --- life cycle -------------------------------------------------------------------------

    def _schedule(self, at: float, changes: dict[str, Any]) -> None:
        self.script.append((at, changes))

    def _set(self, now: float, changes: dict[str, Any]) -> None:
        was_ajar = _ajar(self.car)
        self.car.update(**changes)
        if _ajar(self.car) != was_ajar:
            self.world.log(now, self.index, "door_ajar" if not was_ajar else "door_shut")

    def _board(self, now: float) -> None:
        if self.car.immobilized:
            self.world.log(now, self.index, "immobilized")
            self.phase_until = now + self.rng.uniform(PARK_MIN_S, PARK_MAX_S)
            return
        self.phase = Phase.BOARDING
        for delay, changes in BOARDING:
            self._schedule(now + delay, changes)
        self.phase_until = now + BOARDING[-1][0]

    def _depart(self, now: float) -> None:
        route, leaving = self._plan_trip()
        if route is None:  # nowhere reachable to go: get out and lock again
            self._alight(now)
            return
        self.drive = Drive(self.world.network, route, self.rng, speed_factor=self.speed_factor)
        self.phase = Phase.DRIVING
        self.world.log(now, self.index, "leaving_service_area" if leaving else "departed")

    def _plan_trip(self) -> tuple[list[Step] | None, bool]:
        network = self.world.network
        if self.role.leave_after_s is not None and not self.left_area and network.outside_nodes:
            self.left_area = True
            goal = self.rng.choice(network.outside_nodes)
            return network.route(self.node, goal, stay_inside=False), True
        inside_here = self.world.network_inside(self.node)
        for _ in range(DESTINATION_TRIES):
            goal = self.rng.choice(network.inside_nodes)
            if goal == self.node:
                continue
            route = network.route(self.node, goal, stay_inside=inside_here)
            if route:
                return route, False
        return None, False

    def _start_tow(self, now: float) -> None:
        network = self.world.network
        self.role.theft_at_s = None
        for _ in range(DESTINATION_TRIES):
            goal = self.rng.choice(network.inside_nodes)
            route = network.route(self.node, goal, stay_inside=True) if goal != self.node else None
            if route:
                self.drive = Drive(network, route, self.rng, max_speed_kmh=TOW_SPEED_KMH)
                self.phase = Phase.TOWED
                self.world.log(now, self.index, "theft_started")
                return
        self.phase = Phase.STOLEN

    def _drive(self, now: float, dt: float) -> None:
        drive = self.drive
        assert drive is not None
        before = drive.leg_index, drive.offset
        event = drive.advance(now, dt)
        (lon, lat), heading = drive.position()
        self.point = (lon, lat)
        self.heading = heading
        self.speed_kmh = drive.speed_ms * 3.6
        if event is DriveEvent.RED_LIGHT:
            self.world.counts["red_light"] += 1
        moved = (drive.leg_index, drive.offset) != before
        if moved or event is not None:
            self._report_position(drive.leg.has_sky)
        if self.phase is Phase.DRIVING:
            self._burn(drive, before, dt)
        if event is DriveEvent.ARRIVED:
            self._arrive(now)

    def _report_position(self, has_sky: bool) -> None:  # noqa: FBT001 - one obvious flag
        if not has_sky:
            if not self.fix_lost:
                self.car.lose_fix()
                self.fix_lost = True
            return
        self.fix_lost = False
        lon, lat = self.point
        self.car.move_to(
            lat,
            lon,
            round(self.speed_kmh, 1),
            round(self.heading, 1),
            accuracy_m=round(self.rng.uniform(*ACCURACY_RANGE_M), 1),
        )

    def _burn(self, drive: Drive, before: tuple[int, float], dt: float) -> None:
        leg_index, offset = before
        travelled = sum(leg.length for leg in drive.legs[leg_index : drive.leg_index])
        travelled += drive.offset - offset
        per_km = BATTERY_PCT_PER_KM if self.electric else FUEL_PCT_PER_KM
        used = travelled / 1000.0 * per_km
        if self.role.low_fuel:
            used += LOW_FUEL_DRAIN_PCT_S * dt
        floor = LOW_FUEL_FLOOR_PCT if self.role.low_fuel else 0.0
        was = self.energy
        self.energy = max(floor, self.energy - used)
        if was >= LOW_ENERGY_PCT > self.energy:
            self.world.log(self.world.time_s, self.index, "low_fuel", f"{self.energy:.1f}")
        if abs(self._reported_energy - self.energy) >= ENERGY_STEP_PCT:
            self._write_energy()

    def _write_energy(self) -> None:
        self._reported_energy = self.energy
        level = round(self.energy, 1)
        if self.electric:
            self.car.update(battery_pct=level)
        elif self.hybrid:
            self.car.update(fuel_pct=level, battery_pct=level)
        else:
            self.car.update(fuel_pct=level)

    def _arrive(self, now: float) -> None:
        drive = self.drive
        assert drive is not None
        self.node = drive.legs[-1].step.end
        self.speed_kmh = 0.0
        self.drive = None
        if self.phase is Phase.TOWED:
            self.phase = Phase.STOLEN
            self.world.log(now, self.index, "theft_ended")
            return
        self._alight(now)
        if not self.role.low_fuel and self.energy < REFUEL_BELOW_PCT:
            self.energy = REFUEL_TO_PCT
            self._write_energy()
            self.world.log(now, self.index, "refuelled")
        self.world.log(now, self.index, "arrived")

    def _alight(self, now: float) -> None:
        self.phase = Phase.ALIGHTING
        steps = ALIGHTING_DOOR_AJAR if self.role.door_ajar else ALIGHTING
        for delay, changes in steps:
            self._schedule(now + delay, changes)
        if self.role.door_ajar:
            self._schedule(now + steps[-1][0] + DOOR_AJAR_FOR_S, {"doors_open": False})
        self.phase_until = now + steps[-1][0]


def _ajar(car: SimCar) -> bool:
    status = car.status()
    return status.locked and status.doors_open


class World:
    """Every simulated vehicle, advanced together in fixed ticks."""

    def __init__(  # noqa: PLR0913 - keyword-only knobs of one simulation
        self,
        network: RoadNetwork,
        count: int,
        *,
        seed: int = 0,
        scenario: str = "normal",
        tick_s: float = 1.0,
        on_network: Callable[[int, bool], None] | None = None,
        drivetrains: Sequence[Drivetrain | None] | None = None,
    ) -> None:
        """`drivetrains` gives vehicles theirs (None: the fleet mix draws one)."""
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        if drivetrains is not None and len(drivetrains) != count:
            raise ValueError("one drivetrain (or None) per vehicle")
        self.network = network
        self.seed = seed
        self.scenario = scenario
        self.tick_s = tick_s
        self.time_s = 0.0
        self.ticks = 0
        self.on_network = on_network
        self.events: deque[WorldEvent] = deque(maxlen=MAX_EVENTS)
        self.counts: Counter[str] = Counter()
        self.link_up = [True] * count
        self._inside = set(network.inside_nodes)
        self._schedule = NetworkSchedule(scenario, count, seed)
        roles = assign_roles(scenario, count, seed)
        self.vehicles: list[VehicleSim] = []
        for index in range(count):
            rng = random.Random(f"{seed}/vehicle/{index}")  # noqa: S311 - simulation
            start = rng.choice(network.inside_nodes)
            given = None if drivetrains is None else drivetrains[index]
            vehicle = VehicleSim(self, index, roles[index], rng, start, drivetrain=given)
            self.vehicles.append(vehicle)

    @property
    def cars(self) -> list[SimCar]:
        """Each vehicle's simulated sensors and actuators, by vehicle index."""
        return [v.car for v in self.vehicles]

    def network_inside(self, node: int) -> bool:
        """Whether a junction belongs to the service area's road network."""
        return node in self._inside

    def log(self, t: float, vehicle: int, kind: str, detail: str = "") -> None:
        """Record an event and count it."""
        self.events.append(WorldEvent(round(t, 3), vehicle, kind, detail))
        self.counts[kind] += 1

    def step(self) -> None:
        """Advance every vehicle by one tick."""
        self.ticks += 1
        # Multiplying rather than adding keeps tick times exact, whatever the tick length.
        now = self.ticks * self.tick_s
        self.time_s = now
        for when, index, up in self._schedule.due(now):
            self.link_up[index] = up
            self.log(when, index, "network_up" if up else "network_down")
            if self.on_network is not None:
                self.on_network(index, up)
        for vehicle in self.vehicles:
            vehicle.tick(now, self.tick_s)

    def run_until(self, t: float) -> int:
        """Step until the clock reaches `t`; return how many ticks that took."""
        steps = 0
        while self.time_s + self.tick_s <= t + 1e-9:
            self.step()
            steps += 1
        return steps
