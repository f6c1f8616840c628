"""When to take a fix: the reporting policy of a real tracker, as pure functions.

- every `moving_interval_s` while driving (engine on, or moving faster than GPS noise),
- every `parked_interval_s` while parked,
- at once when lock, doors, engine or alarm change,
- at once on a sharp turn while moving, so a map can draw the corner instead of cutting it.

Timing uses a monotonic clock chosen by the caller, so a wall clock set back by NTP cannot
silence a car; the fix's own timestamp comes from the wall clock elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vehicle_agent.backends.base import Position, VehicleStatus


class Trigger(StrEnum):
    """Why a fix is taken."""

    FIRST = "first"
    REQUESTED = "requested"
    STATUS_CHANGE = "status_change"
    HEADING_CHANGE = "heading_change"
    INTERVAL = "interval"


@dataclass(frozen=True, slots=True)
class Sample:
    """What the car looked like at one instant: its GPS fix (if any) and its status."""

    position: Position | None
    status: VehicleStatus


def status_key(status: VehicleStatus) -> tuple[bool, bool, bool, bool]:
    """The status fields whose change is reported at once (an unknown alarm counts as off)."""
    return (status.locked, status.doors_open, status.engine_on, bool(status.alarm))


def heading_delta(a: float, b: float) -> float:
    """The smaller angle between two headings, in degrees (0 to 180)."""
    delta = abs(a - b) % 360.0
    return min(delta, 360.0 - delta)


@dataclass(frozen=True, slots=True)
class ReportingPolicy:
    """Intervals and thresholds; `decide` applies them."""

    moving_interval_s: float = 5.0
    parked_interval_s: float = 60.0
    heading_change_deg: float = 30.0
    moving_speed_kmh: float = 3.0

    def is_moving(self, sample: Sample) -> bool:
        """Whether the GPS says the car moves faster than a standing receiver's noise."""
        position = sample.position
        return position is not None and position.speed_kmh >= self.moving_speed_kmh

    def interval(self, sample: Sample) -> float:
        """Seconds between routine fixes in the car's current state."""
        driving = sample.status.engine_on or self.is_moving(sample)
        return self.moving_interval_s if driving else self.parked_interval_s

    def decide(
        self, last: Sample | None, last_at: float | None, current: Sample, now: float
    ) -> Trigger | None:
        """Why to take a fix now, or None; `last`/`last_at` describe the last fix taken."""
        if last is None or last_at is None:
            return Trigger.FIRST
        if status_key(current.status) != status_key(last.status):
            return Trigger.STATUS_CHANGE
        if self._turned(last, current):
            return Trigger.HEADING_CHANGE
        if now - last_at >= self.interval(current):
            return Trigger.INTERVAL
        return None

    def _turned(self, last: Sample, current: Sample) -> bool:
        if not self.is_moving(current) or last.position is None or current.position is None:
            return False
        delta = heading_delta(last.position.heading, current.position.heading)
        return delta >= self.heading_change_deg
