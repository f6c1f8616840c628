"""Every SQL statement of maintenance windows (the table comes from 0035)."""

from __future__ import annotations

import uuid  # noqa: TC003 - class_row builds these dataclasses at runtime
from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - idem
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class MaintenanceRow:
    """A maintenance window."""

    id: uuid.UUID
    vehicle_id: str
    starts: datetime
    ends: datetime
    reason: str
    created_by: uuid.UUID | None
    created_at: datetime


_VEHICLE_EXISTS: LiteralString = "SELECT 1 FROM vehicles WHERE id = %(vehicle_id)s"

_MAINTENANCE_COLUMNS: LiteralString = """
    id, vehicle_id, lower(period) AS starts, upper(period) AS ends, reason, created_by, created_at
"""

_INSERT_MAINTENANCE: LiteralString = (
    """
    INSERT INTO maintenance_windows (vehicle_id, period, reason, created_by)
    VALUES (%(vehicle_id)s, tstzrange(%(from)s, %(to)s, '[)'), %(reason)s, %(created_by)s)
    RETURNING"""  # noqa: S608 - LiteralString constants only
    + _MAINTENANCE_COLUMNS
)

_LIST_MAINTENANCE: LiteralString = (
    "SELECT"
    + _MAINTENANCE_COLUMNS
    + """
    FROM maintenance_windows
    WHERE vehicle_id = %(vehicle_id)s AND upper(period) > %(since)s
    ORDER BY lower(period), id
    LIMIT %(limit)s
"""
)

_DELETE_MAINTENANCE: LiteralString = """
    DELETE FROM maintenance_windows WHERE vehicle_id = %(vehicle_id)s AND id = %(window_id)s
"""

_OVERLAPPING_BOOKINGS: LiteralString = """
    SELECT id FROM bookings
    WHERE vehicle_id = %(vehicle_id)s AND status <> 'cancelled'
      AND upper(period) > %(from)s AND lower(period) < %(to)s
    ORDER BY lower(period), id
"""


async def vehicle_exists(conn: AsyncConnection[Any], vehicle_id: str) -> bool:
    """Whether a vehicle with this id exists (retired ones included)."""
    cur = await conn.execute(_VEHICLE_EXISTS, {"vehicle_id": vehicle_id})
    return await cur.fetchone() is not None


async def insert_window(  # noqa: PLR0913 - one per column
    conn: AsyncConnection[Any],
    *,
    vehicle_id: str,
    starts: datetime,
    ends: datetime,
    reason: str,
    created_by: uuid.UUID,
) -> MaintenanceRow:
    """Schedule a window; raises psycopg's ExclusionViolation when it overlaps another."""
    async with conn.cursor(row_factory=class_row(MaintenanceRow)) as cur:
        await cur.execute(
            _INSERT_MAINTENANCE,
            {
                "vehicle_id": vehicle_id,
                "from": starts,
                "to": ends,
                "reason": reason,
                "created_by": created_by,
            },
        )
        row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING returns its row
    return row


async def list_windows(
    conn: AsyncConnection[Any], vehicle_id: str, *, since: datetime, limit: int
) -> list[MaintenanceRow]:
    """The vehicle's windows that end after `since`, earliest first."""
    async with conn.cursor(row_factory=class_row(MaintenanceRow)) as cur:
        await cur.execute(
            _LIST_MAINTENANCE, {"vehicle_id": vehicle_id, "since": since, "limit": limit}
        )
        return await cur.fetchall()


async def delete_window(conn: AsyncConnection[Any], vehicle_id: str, window_id: uuid.UUID) -> bool:
    """Remove a window; False when the vehicle has no such window."""
    cur = await conn.execute(
        _DELETE_MAINTENANCE, {"vehicle_id": vehicle_id, "window_id": window_id}
    )
    return cur.rowcount > 0


async def overlapping_bookings(
    conn: AsyncConnection[Any], vehicle_id: str, starts: datetime, ends: datetime
) -> Sequence[uuid.UUID]:
    """Ids of the vehicle's live bookings that overlap [starts, ends)."""
    cur = await conn.execute(
        _OVERLAPPING_BOOKINGS, {"vehicle_id": vehicle_id, "from": starts, "to": ends}
    )
    return [row[0] for row in await cur.fetchall()]
