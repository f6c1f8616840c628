"""A simulated car: position, status and actuators in one object, driven by code.

The simulator moves it and changes its status; standing alone (`freecar agent` with the sim
backends) it is a car parked where the configuration says. It refuses nothing itself: the
agent's safety rules decide, exactly as they do for a real car.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Final

from protocol.commands import Action
from vehicle_agent.backends.base import Position, VehicleStatus

# Mean Earth radius (IUGG), for the odometer's great-circle distances.
EARTH_RADIUS_KM: Final = 6371.0088


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points (haversine), in km."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


class SimCar:
    """PositionSource, StatusSource and Actuator for one virtual car."""

    def __init__(  # noqa: PLR0913 - keyword-only: one parameter per piece of car state
        self,
        *,
        lat: float,
        lon: float,
        heading: float = 0.0,
        locked: bool = True,
        doors_open: bool = False,
        engine_on: bool = False,
        fuel_pct: float | None = 80.0,
        battery_pct: float | None = None,
        odometer_km: float = 0.0,
        alarm: bool = False,
    ) -> None:
        if fuel_pct is None and battery_pct is None:
            raise ValueError("a car reports fuel_pct, battery_pct or both")
        self._position: Position | None = Position(lat, lon, 0.0, heading)
        # Where the odometer last counted from; kept through a lost fix, so distance driven
        # through a tunnel is counted when the fix comes back.
        self._last_point = (lat, lon)
        self._status = VehicleStatus(
            locked=locked,
            doors_open=doors_open,
            engine_on=engine_on,
            odometer_km=odometer_km,
            fuel_pct=fuel_pct,
            battery_pct=battery_pct,
            alarm=alarm,
        )
        self.immobilized = False
        self.performed: list[Action] = []

    # --- driven by the simulator --------------------------------------------------------

    def move_to(
        self,
        lat: float,
        lon: float,
        speed_kmh: float,
        heading: float,
        *,
        accuracy_m: float | None = None,
    ) -> None:
        """Put the car at a new fix; the odometer advances by the distance from the last one."""
        driven = distance_km(*self._last_point, lat, lon)
        self._last_point = (lat, lon)
        self._position = Position(lat, lon, speed_kmh, heading, accuracy_m)
        self._status = replace(self._status, odometer_km=self._status.odometer_km + driven)

    def lose_fix(self) -> None:
        """No GPS (a tunnel, a car park) until the next `move_to`."""
        self._position = None

    def update(self, **status_changes: Any) -> None:  # noqa: ANN401 - VehicleStatus fields
        """Change status fields, e.g. `update(doors_open=True)` or `update(fuel_pct=8.0)`."""
        self._status = replace(self._status, **status_changes)

    # --- PositionSource and StatusSource -------------------------------------------------

    async def start(self) -> None:
        """Nothing to connect to."""

    def position(self) -> Position | None:
        """The current fix, or None after `lose_fix`."""
        return self._position

    def status(self) -> VehicleStatus:
        """The current status."""
        return self._status

    async def close(self) -> None:
        """Nothing to release."""

    # --- Actuator ------------------------------------------------------------------------

    async def perform(self, action: Action) -> None:
        """Carry out the action on the simulated car; every action is supported."""
        self.performed.append(action)
        if action is Action.LOCK:
            self._status = replace(self._status, locked=True)
        elif action is Action.UNLOCK:
            self._status = replace(self._status, locked=False)
        elif action is Action.IMMOBILIZE:
            self.immobilized = True
        elif action is Action.MOBILIZE:
            self.immobilized = False
        # locate and honk change nothing the car reports: the agent sends a fix after any command.
