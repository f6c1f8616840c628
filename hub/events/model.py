"""What the hub reports about a vehicle: event kinds and the event record."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime


class EventKind(StrEnum):
    """Every kind of event, as stored in `events.kind` and named in notification rules."""

    GEOFENCE_ENTER = "geofence_enter"
    GEOFENCE_EXIT = "geofence_exit"
    LEFT_SERVICE_AREA = "left_service_area"
    ENTERED_RESTRICTED = "entered_restricted"
    OVERSPEED = "overspeed"
    LOW_FUEL = "low_fuel"
    LOW_BATTERY = "low_battery"
    DOOR_OPEN_WHILE_LOCKED = "door_open_while_locked"
    MOVING_WHILE_LOCKED = "moving_while_locked"
    ENGINE_ON_WITHOUT_TRIP = "engine_on_without_trip"
    IDLE = "idle"
    OFFLINE = "offline"
    ONLINE = "online"
    COMMAND_FAILED = "command_failed"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a vehicle, at a time and (when known) a place."""

    vehicle_id: str
    kind: EventKind
    ts: datetime
    lat: float | None = None
    lon: float | None = None
    geofence_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notify: bool = True
    """False for events found in old data (a backfill after an outage): stored, not sent."""
