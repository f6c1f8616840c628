"""Listing events: the filters and the keyset cursor. Nothing here commits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from api.events import repository
from api.events.schemas import Event, EventPage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
# A cursor is "<microseconds since 1970>-<event id>". The endpoint's pattern bounds both
# (16 digits: until the year 2286; 18 digits: below bigint's maximum), so every cursor the
# schema admits is a position this code can read: a made-up one merely lists older events.
CURSOR_PATTERN: Final = r"^[0-9]{1,16}-[0-9]{1,18}$"


def encode_cursor(ts: datetime, event_id: int) -> str:
    """The cursor for the position after (older than) this event."""
    return f"{max(0, (ts - _EPOCH) // _ONE_US)}-{event_id}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (ts, id) a cursor stands for (one that matched `CURSOR_PATTERN`)."""
    micros, _, event_id = cursor.partition("-")
    return _EPOCH + int(micros) * _ONE_US, int(event_id)


async def list_events(  # noqa: PLR0913 - one per filter
    conn: AsyncConnection[Any],
    *,
    vehicle_id: str | None,
    kinds: Sequence[str] | None,
    geofence_id: int | None,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> EventPage:
    """A page of events matching the filters, newest first (`from` >= `to` finds none)."""
    rows = await repository.list_events(
        conn,
        vehicle_id=vehicle_id,
        kinds=kinds or None,
        geofence_id=geofence_id,
        since=since,
        until=until,
        before=None if cursor is None else decode_cursor(cursor),
        limit=limit + 1,  # one more tells whether a next page exists
    )
    page = rows[:limit]
    more = len(rows) > limit
    return EventPage(
        items=[
            Event(
                id=r.id,
                vehicle_id=r.vehicle_id,
                kind=r.kind,
                ts=r.ts,
                lat=r.lat,
                lon=r.lon,
                geofence_id=r.geofence_id,
                details=r.details,
                notify=r.notify,
                notified_at=r.notified_at,
                created_at=r.created_at,
            )
            for r in page
        ],
        next_cursor=encode_cursor(page[-1].ts, page[-1].id) if more else None,
    )
