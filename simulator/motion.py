"""Kinematics along a route: accelerate to the limit, slow for turns, stop at red lights.

One `Drive` moves one vehicle along one route in fixed time steps. Every random choice
(which light is red and for how long) comes from the vehicle's own generator in a fixed
order, so the same seed drives the same track.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from simulator.geo import LonLat, bearing_deg, distance_m, turn_deg

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

    from simulator.roads import RoadNetwork, Step

KMH: Final = 1 / 3.6  # km/h -> m/s
# A small car pulls away at about 2 m/s^2 (0-50 km/h in 7 s) and brakes comfortably at 2.5.
ACCEL_MS2: Final = 2.0
DECEL_MS2: Final = 2.5
# Corner speeds: a right-angle turn is taken at walking-pace-plus, a U-turn slower still.
TURN_ANGLE_DEG: Final = 45.0
TURN_SPEED_KMH: Final = 20.0
UTURN_ANGLE_DEG: Final = 150.0
UTURN_SPEED_KMH: Final = 10.0
# Chance a signalled junction shows red on arrival, and how long the wait is: Shanghai's
# signal cycles run 60-120 s, so a red lasts 10-45 s of it.
RED_CHANCE: Final = 0.5
RED_MIN_S: Final = 10.0
RED_MAX_S: Final = 45.0
# Close enough to a stop line to call it reached; below one tick's creep at 1 m/s.
STOP_SNAP_M: Final = 1.0
# The speed a car creeps at when braking would stall it short of its stop line.
CREEP_MS: Final = 1.0


class DriveEvent(StrEnum):
    """What happened during a step, for the vehicle's life cycle and the event log."""

    RED_LIGHT = "red_light"
    GREEN_LIGHT = "green_light"
    ARRIVED = "arrived"


@dataclass(frozen=True, slots=True)
class Leg:
    """One route step's geometry, precomputed for interpolation."""

    step: Step
    points: tuple[LonLat, ...]
    cumulative: tuple[float, ...]  # distance from the leg's start to each point
    bearings: tuple[float, ...]  # heading of each segment
    speed_ms: float
    has_sky: bool

    @property
    def length(self) -> float:
        """The leg's length in metres."""
        return self.cumulative[-1]

    @classmethod
    def of(cls, step: Step) -> Leg:
        """Precompute a step's geometry."""
        points = step.points
        cumulative = [0.0]
        bearings = []
        for p, q in itertools.pairwise(points):
            cumulative.append(cumulative[-1] + distance_m(p, q))
            bearings.append(bearing_deg(p, q))
        return cls(
            step,
            points,
            tuple(cumulative),
            tuple(bearings),
            step.edge.speed_kmh * KMH,
            step.edge.has_sky,
        )

    def locate(self, offset: float) -> tuple[LonLat, float]:
        """The point `offset` metres along the leg and the heading there."""
        index = min(
            max(bisect.bisect_right(self.cumulative, offset) - 1, 0), len(self.bearings) - 1
        )
        start, end = self.cumulative[index], self.cumulative[index + 1]
        fraction = 0.0 if end <= start else min(max((offset - start) / (end - start), 0.0), 1.0)
        p, q = self.points[index], self.points[index + 1]
        return (p[0] + (q[0] - p[0]) * fraction, p[1] + (q[1] - p[1]) * fraction), self.bearings[
            index
        ]


class Drive:
    """A vehicle under way along a route."""

    def __init__(
        self,
        network: RoadNetwork,
        route: Sequence[Step],
        rng: random.Random,
        *,
        speed_factor: float = 1.0,
        max_speed_kmh: float | None = None,
    ) -> None:
        if not route:
            raise ValueError("a drive needs at least one step")
        self.network = network
        self.legs = [Leg.of(step) for step in route]
        self.rng = rng
        self.speed_factor = speed_factor
        self.max_speed_ms = math.inf if max_speed_kmh is None else max_speed_kmh * KMH
        self.leg_index = 0
        self.offset = 0.0
        self.speed_ms = 0.0
        self.waiting_until: float | None = None
        self.finished = False
        self._red_wait = self._decide_light(0)

    @property
    def leg(self) -> Leg:
        """The leg being driven."""
        return self.legs[self.leg_index]

    @property
    def length_m(self) -> float:
        """The whole route's length."""
        return sum(leg.length for leg in self.legs)

    def position(self) -> tuple[LonLat, float]:
        """Where the vehicle is and which way it faces."""
        return self.leg.locate(self.offset)

    def _decide_light(self, index: int) -> float | None:
        """Seconds of red at the end of leg `index`, or None when the way is clear."""
        if index + 1 >= len(self.legs):
            return None
        here, there = self.legs[index].step, self.legs[index + 1].step
        if not self.network.has_light(here.end, here.edge, there.edge):
            return None
        if self.rng.random() >= RED_CHANCE:
            return None
        return self.rng.uniform(RED_MIN_S, RED_MAX_S)

    def _speed_at_end(self, index: int) -> float:
        """How fast the vehicle may cross the junction at the end of leg `index`."""
        if index + 1 >= len(self.legs):
            return 0.0
        turn = turn_deg(self.legs[index].bearings[-1], self.legs[index + 1].bearings[0])
        if turn >= UTURN_ANGLE_DEG:
            return UTURN_SPEED_KMH * KMH
        if turn >= TURN_ANGLE_DEG:
            return TURN_SPEED_KMH * KMH
        return math.inf

    def advance(self, now: float, dt: float) -> DriveEvent | None:
        """Move on by `dt` seconds ending at time `now`; report a stop, a start or arrival."""
        if self.finished:
            return None
        if self.waiting_until is not None:
            if now < self.waiting_until:
                return None
            self.waiting_until = None
            self._next_leg()
            return DriveEvent.GREEN_LIGHT
        leg = self.leg
        must_stop = self._red_wait is not None or self.leg_index + 1 == len(self.legs)
        to_end = leg.length - self.offset
        end_speed = 0.0 if must_stop else self._speed_at_end(self.leg_index)
        cap = min(leg.speed_ms * self.speed_factor, self.max_speed_ms)
        braking = math.sqrt(end_speed * end_speed + 2.0 * DECEL_MS2 * max(to_end, 0.0))
        new_speed = max(0.0, min(self.speed_ms + ACCEL_MS2 * dt, cap, braking))
        if must_stop and new_speed < CREEP_MS and to_end > STOP_SNAP_M:
            new_speed = min(CREEP_MS, cap)
        travel = (self.speed_ms + new_speed) / 2.0 * dt
        if must_stop and (travel >= to_end or to_end <= STOP_SNAP_M):
            self.offset = leg.length
            self.speed_ms = 0.0
            if self.leg_index + 1 == len(self.legs):
                self.finished = True
                return DriveEvent.ARRIVED
            self.waiting_until = now + (self._red_wait or 0.0)
            return DriveEvent.RED_LIGHT
        self.speed_ms = new_speed
        self.offset += travel
        while self.offset >= self.leg.length and self.leg_index + 1 < len(self.legs):
            if self._red_wait is not None:  # overshot a stop line within one tick
                self.offset = self.leg.length
                break
            carry = self.offset - self.leg.length
            self._next_leg()
            self.offset = carry
        self.offset = min(self.offset, self.leg.length)
        return None

    def _next_leg(self) -> None:
        self.leg_index += 1
        self.offset = 0.0
        self._red_wait = self._decide_light(self.leg_index)
