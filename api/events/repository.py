"""Every SQL statement of the events API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - class_row builds these dataclasses at runtime
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class EventRow:
    """One row of `events`."""

    id: int
    vehicle_id: str
    kind: str
    ts: datetime
    lat: float | None
    lon: float | None
    geofence_id: int | None
    details: dict[str, Any]
    notify: bool
    notified_at: datetime | None
    created_at: datetime


# Keyset pagination on (ts, id), newest first: a page costs the same however deep it is,
# and events stored meanwhile neither repeat nor shift a page. A null filter matches all.
_LIST_EVENTS: LiteralString = """
    SELECT id, vehicle_id, kind, ts, lat, lon, geofence_id, details, notify, notified_at,
           created_at
    FROM events
    WHERE (%(vehicle_id)s::text IS NULL OR vehicle_id = %(vehicle_id)s::text)
      AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))
      AND (%(geofence_id)s::bigint IS NULL OR geofence_id = %(geofence_id)s::bigint)
      AND (%(since)s::timestamptz IS NULL OR ts >= %(since)s::timestamptz)
      AND (%(until)s::timestamptz IS NULL OR ts < %(until)s::timestamptz)
      AND (%(before_ts)s::timestamptz IS NULL
           OR (ts, id) < (%(before_ts)s::timestamptz, %(before_id)s::bigint))
    ORDER BY ts DESC, id DESC
    LIMIT %(limit)s
"""


async def list_events(  # noqa: PLR0913 - one per filter
    conn: AsyncConnection[Any],
    *,
    vehicle_id: str | None,
    kinds: Sequence[str] | None,
    geofence_id: int | None,
    since: datetime | None,
    until: datetime | None,
    before: tuple[datetime, int] | None,
    limit: int,
) -> list[EventRow]:
    """Events matching the filters, newest first, older than `before` (ts, id) if given."""
    params = {
        "vehicle_id": vehicle_id,
        "kinds": None if kinds is None else list(kinds),
        "geofence_id": geofence_id,
        "since": since,
        "until": until,
        "before_ts": None if before is None else before[0],
        "before_id": None if before is None else before[1],
        "limit": limit,
    }
    async with conn.cursor(row_factory=class_row(EventRow)) as cur:
        await cur.execute(_LIST_EVENTS, params)
        return await cur.fetchall()
