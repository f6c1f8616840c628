"""Response bodies of /v1/admin/events."""

from datetime import datetime

from pydantic import BaseModel, Field, JsonValue


class Event(BaseModel):
    """Something that happened to a vehicle, as the hub stored it."""

    id: int
    vehicle_id: str
    kind: str = Field(description="One of the kinds in docs/events.md (a newer hub may add kinds).")
    ts: datetime = Field(description="When it happened (the vehicle's fix time).")
    lat: float | None
    lon: float | None
    geofence_id: int | None
    details: dict[str, JsonValue] = Field(description="Kind-specific values (speed, fuel...).")
    notify: bool = Field(description="False for events found in old data: recorded, not sent.")
    notified_at: datetime | None = Field(
        description="When its notifications were done (null: pending, or nothing to send yet)."
    )
    created_at: datetime


class EventPage(BaseModel):
    """A page of events, newest first."""

    items: list[Event]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page."
    )
