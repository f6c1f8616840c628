"""What the hub reports about a vehicle: event kinds and the event record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db.event_rules import EventKindName

if TYPE_CHECKING:
    from datetime import datetime


EventKind = EventKindName
"""Every kind of event, as stored in `events.kind` and named in notification rules."""


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
