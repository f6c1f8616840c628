"""Scenarios: which vehicles misbehave, how, and when. docs/simulator.md is their contract.

A scenario picks its vehicles with its own generator seeded from `--seed`, so the same
seed always picks the same vehicles and times, whatever else the run does.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Final

NORMAL: Final = "normal"
LEAVE_SERVICE_AREA: Final = "leave-service-area"
OFFLINE_BURST: Final = "offline-burst"
DOOR_AJAR: Final = "door-ajar"
LOW_FUEL: Final = "low-fuel"
THEFT: Final = "theft"
FLAKY_NETWORK: Final = "flaky-network"
SCENARIOS: Final = (
    NORMAL,
    LEAVE_SERVICE_AREA,
    OFFLINE_BURST,
    DOOR_AJAR,
    LOW_FUEL,
    THEFT,
    FLAKY_NETWORK,
)

# Share of the fleet each scenario affects (at least one vehicle): enough to see on a map,
# few enough that the rest shows what normal looks like beside it.
LEAVE_FRACTION: Final = 0.1
# The leavers set off within this many seconds of the start, and wait outside this long.
LEAVE_WITHIN_S: Final = 30.0
OUTSIDE_DWELL_S: Final = 300.0
OFFLINE_FRACTION: Final = 1 / 3
# The first burst starts once every car has had time to connect and report; it lasts long
# enough to queue several fixes per moving car (one per 5 s by default); then it repeats.
OFFLINE_FIRST_S: Final = 15.0
OFFLINE_FOR_S: Final = 30.0
OFFLINE_EVERY_S: Final = 120.0
DOOR_AJAR_FRACTION: Final = 0.2
# When the door is found open after parking, and how long it stays open.
DOOR_AJAR_AT_S: Final = 5.0
DOOR_AJAR_FOR_S: Final = 60.0
LOW_FUEL_FRACTION: Final = 0.2
# Low-fuel cars start just above the 10 % warning level and drain fast (as if the gauge
# were sped up), so they cross it within a minute of driving.
LOW_FUEL_START_PCT: Final = 12.0
LOW_FUEL_DRAIN_PCT_S: Final = 0.05
LOW_FUEL_FLOOR_PCT: Final = 1.0
THEFT_FRACTION: Final = 0.1
# Thefts happen after every car reported at least once parked and locked.
THEFT_AFTER_S: Final = 10.0
THEFT_WITHIN_S: Final = 30.0
# A tow truck in town.
TOW_SPEED_KMH: Final = 30.0
# Flaky links: mean time between drops, and how long each lasts. 60 s up on average keeps
# a car reconnecting often enough to matter in a five-minute test.
FLAKY_MEAN_UP_S: Final = 60.0
FLAKY_DOWN_MIN_S: Final = 2.0
FLAKY_DOWN_MAX_S: Final = 15.0


class ScenarioError(ValueError):
    """An unknown scenario name."""


@dataclass(slots=True)
class Role:
    """What a scenario asks of one vehicle; the default is a well-behaved car."""

    leave_after_s: float | None = None
    door_ajar: bool = False
    low_fuel: bool = False
    theft_at_s: float | None = None


def check_scenario(name: str) -> str:
    """Return the name if it is a known scenario; raise ScenarioError otherwise."""
    if name not in SCENARIOS:
        raise ScenarioError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return name


def _pick(rng: random.Random, count: int, fraction: float) -> list[int]:
    wanted = min(count, max(1, round(count * fraction)))
    return sorted(rng.sample(range(count), wanted))


def assign_roles(name: str, count: int, seed: int) -> list[Role]:
    """One role per vehicle for the scenario, chosen deterministically from the seed."""
    check_scenario(name)
    roles = [Role() for _ in range(count)]
    rng = random.Random(f"{seed}/scenario/{name}")  # noqa: S311 - simulation, not secrets
    if count == 0:
        return roles
    if name == LEAVE_SERVICE_AREA:
        for index in _pick(rng, count, LEAVE_FRACTION):
            roles[index].leave_after_s = rng.uniform(0.0, LEAVE_WITHIN_S)
    elif name == DOOR_AJAR:
        for index in _pick(rng, count, DOOR_AJAR_FRACTION):
            roles[index].door_ajar = True
    elif name == LOW_FUEL:
        for index in _pick(rng, count, LOW_FUEL_FRACTION):
            roles[index].low_fuel = True
    elif name == THEFT:
        for index in _pick(rng, count, THEFT_FRACTION):
            roles[index].theft_at_s = THEFT_AFTER_S + rng.uniform(
                0.0, THEFT_WITHIN_S - THEFT_AFTER_S
            )
    return roles


class NetworkSchedule:
    """When each vehicle's link goes down and comes back, as a time-ordered stream."""

    def __init__(self, name: str, count: int, seed: int) -> None:
        self.name = check_scenario(name)
        self.count = count
        self.seed = seed
        # (time, vehicle, up): ties resolve by vehicle index, so the order is deterministic.
        self._heap: list[tuple[float, int, bool]] = []
        self._burst_rng = random.Random(f"{seed}/offline-burst")  # noqa: S311 - simulation
        self._flaky_rngs: list[random.Random] = []
        if count == 0:
            return
        if name == OFFLINE_BURST:
            self._schedule_burst(OFFLINE_FIRST_S)
        elif name == FLAKY_NETWORK:
            for index in range(count):
                rng = random.Random(f"{seed}/flaky/{index}")  # noqa: S311 - simulation
                self._flaky_rngs.append(rng)
                heapq.heappush(self._heap, (rng.expovariate(1 / FLAKY_MEAN_UP_S), index, False))

    def _schedule_burst(self, start: float) -> None:
        for index in _pick(self._burst_rng, self.count, OFFLINE_FRACTION):
            heapq.heappush(self._heap, (start, index, False))
            heapq.heappush(self._heap, (start + OFFLINE_FOR_S, index, True))
        # A marker for the next burst: vehicle -1 is nobody.
        heapq.heappush(self._heap, (start + OFFLINE_EVERY_S, -1, False))

    def due(self, now: float) -> list[tuple[float, int, bool]]:
        """Every change at or before `now`, oldest first: (time, vehicle, link up)."""
        changes: list[tuple[float, int, bool]] = []
        while self._heap and self._heap[0][0] <= now:
            when, index, up = heapq.heappop(self._heap)
            if index < 0:
                self._schedule_burst(when)
                continue
            changes.append((when, index, up))
            if self.name == FLAKY_NETWORK:
                rng = self._flaky_rngs[index]
                if up:
                    nxt = when + rng.expovariate(1 / FLAKY_MEAN_UP_S)
                else:
                    nxt = when + rng.uniform(FLAKY_DOWN_MIN_S, FLAKY_DOWN_MAX_S)
                heapq.heappush(self._heap, (nxt, index, not up))
        return changes
