"""Listing events: the filters and the keyset cursor. Nothing here commits."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from api import pagination
from api.events import repository
from api.events.schemas import Event, EventPage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection


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
    kinds = sorted(set(kinds)) if kinds else None
    filters = pagination.fingerprint(
        {
            "list": "events",
            "vehicle_id": vehicle_id,
            "kinds": kinds,
            "geofence_id": geofence_id,
            "from": None if since is None else since.isoformat(),
            "to": None if until is None else until.isoformat(),
        }
    )
    before = None
    if cursor is not None:
        ts, event_id = pagination.decode_cursor(cursor, (datetime, int), filters).key
        assert isinstance(ts, datetime)  # the shape says so
        assert isinstance(event_id, int)
        before = (ts, event_id)
    rows = await repository.list_events(
        conn,
        vehicle_id=vehicle_id,
        kinds=kinds,
        geofence_id=geofence_id,
        since=since,
        until=until,
        before=before,
        limit=limit + 1,  # one more tells whether a next page exists
    )
    page = pagination.next_page(rows, limit, lambda row: (row.ts, row.id), filters)
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
            for r in page.rows
        ],
        next_cursor=page.next_cursor,
    )
