"""Rules the agent applies before acting on a verified command, as a pure function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from protocol.acks import REASON_UNSAFE_WHILE_MOVING
from protocol.commands import ACTIONS_REFUSED_WHILE_MOVING, Action

if TYPE_CHECKING:
    from vehicle_agent.backends.base import Position, VehicleStatus

# Reason of a rejected unlock while the alarm sounds: whoever triggered it may be at the car.
REASON_ALARM_ACTIVE: Final = "alarm_active"


@dataclass(frozen=True, slots=True)
class SafetyRules:
    """Thresholds of the checks; the defaults follow the contract and common sense."""

    # Walking speed: GPS reads a km/h or two at rest, and above this the car is moving.
    max_immobilize_speed_kmh: float = 5.0
    allow_unlock_during_alarm: bool = False

    def refusal(
        self, action: Action, status: VehicleStatus, position: Position | None
    ) -> str | None:
        """The reason to refuse `action` in this state, or None if it is safe."""
        if action in ACTIONS_REFUSED_WHILE_MOVING:
            # The contract: only standing still with the engine off. Without a GPS fix (a car
            # park) the engine being off is what matters: nothing is cut while driving.
            too_fast = position is not None and position.speed_kmh > self.max_immobilize_speed_kmh
            if status.engine_on or too_fast:
                return REASON_UNSAFE_WHILE_MOVING
        if action is Action.UNLOCK and status.alarm and not self.allow_unlock_during_alarm:
            return REASON_ALARM_ACTIVE
        return None
