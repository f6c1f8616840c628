"""The contract between the agent and its sensor and actuator backends.

Backends stream updates in the background and keep the latest values; the agent's reporting
loop reads a snapshot when it decides to report. That keeps backends free of any knowledge
of MQTT, queues or reporting policy, and lets one backend provide position (gpsd) while
another provides status and actuation (CAN), or one (the simulator's) provide everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from protocol.commands import Action


@dataclass(frozen=True, slots=True)
class Position:
    """A GPS fix as the receiver reported it."""

    lat: float
    lon: float
    speed_kmh: float
    heading: float
    accuracy_m: float | None = None


@dataclass(frozen=True, slots=True)
class VehicleStatus:
    """What the car says about itself, from its bus or its simulation."""

    locked: bool
    doors_open: bool
    engine_on: bool
    odometer_km: float
    fuel_pct: float | None = None
    battery_pct: float | None = None
    alarm: bool | None = None


class BackendError(Exception):
    """A backend cannot read or act; `reason` is a short code suitable for a command ack."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@runtime_checkable
class PositionSource(Protocol):
    """Provides the latest GPS fix, or None while there is no fix."""

    async def start(self) -> None:
        """Connect and begin receiving fixes in the background."""

    def position(self) -> Position | None:
        """The latest fix, or None when the receiver has none (no sky, no device)."""

    async def close(self) -> None:
        """Stop receiving and release the device or connection."""


@runtime_checkable
class StatusSource(Protocol):
    """Provides the car's latest lock, door, engine and energy status."""

    async def start(self) -> None:
        """Connect and begin receiving status in the background."""

    def status(self) -> VehicleStatus:
        """The latest known status."""

    async def close(self) -> None:
        """Stop receiving and release the bus."""


@runtime_checkable
class Actuator(Protocol):
    """Carries out a verified, safety-checked command on the car."""

    async def perform(self, action: Action) -> None:
        """Do it, or raise BackendError with a reason if the car could not."""
