"""Every SQL statement of the geofences API: the shared statements of db.geofences, async.

Rows come back as they are stored, not re-validated: a fence someone wrote with plain SQL
that the model would refuse can still be listed, read, fixed with a PATCH or deleted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime  # noqa: TC003 - class_row builds these dataclasses at runtime
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import class_row

from db.geofences.repository import (
    DELETE_GEOFENCE,
    GET_GEOFENCE,
    INSERT_GEOFENCE,
    LIST_GEOFENCES,
    UPDATE_GEOFENCE,
    geofence_params,
)

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from db.geofences.model import GeofenceKind, GeofenceSpec


# Two PATCHes merging into the same stored spec must not both start from it.
_LOCK_GEOFENCE: LiteralString = "SELECT 1 FROM geofences WHERE id = %s FOR UPDATE"


@dataclass(frozen=True, slots=True)
class GeofenceRow:
    """One row of `geofences`."""

    id: int
    name: str
    kind: str
    geometry: dict[str, Any]
    radius_m: float | None
    width_m: float | None
    speed_limit_kmh: float | None
    schedule: dict[str, Any] | None
    enter_margin_m: float
    exit_margin_m: float
    dwell_s: int
    active: bool
    created_at: datetime
    updated_at: datetime

    def fields(self) -> dict[str, Any]:
        """The client-editable fields, as `GeofenceSpec` takes them (to merge a PATCH into)."""
        values = asdict(self)
        for name in ("id", "created_at", "updated_at"):
            del values[name]
        return values


async def insert_geofence(conn: AsyncConnection[Any], spec: GeofenceSpec) -> GeofenceRow:
    """Store a new geofence; hubs reload when the request's transaction commits."""
    async with conn.cursor(row_factory=class_row(GeofenceRow)) as cur:
        await cur.execute(INSERT_GEOFENCE, geofence_params(spec))
        row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return row


async def update_geofence(
    conn: AsyncConnection[Any], geofence_id: int, spec: GeofenceSpec
) -> GeofenceRow | None:
    """Replace a geofence's definition; None if there is no such geofence."""
    async with conn.cursor(row_factory=class_row(GeofenceRow)) as cur:
        await cur.execute(UPDATE_GEOFENCE, {**geofence_params(spec), "id": geofence_id})
        return await cur.fetchone()


async def get_geofence(
    conn: AsyncConnection[Any], geofence_id: int, *, for_update: bool = False
) -> GeofenceRow | None:
    """One geofence by id, active or not; `for_update` locks it until the request commits."""
    if for_update:
        await conn.execute(_LOCK_GEOFENCE, (geofence_id,))
    async with conn.cursor(row_factory=class_row(GeofenceRow)) as cur:
        await cur.execute(GET_GEOFENCE, (geofence_id,))
        return await cur.fetchone()


async def delete_geofence(conn: AsyncConnection[Any], geofence_id: int) -> bool:
    """Delete a geofence (its vehicles' state and fence rules cascade); False if unknown."""
    async with conn.cursor() as cur:
        await cur.execute(DELETE_GEOFENCE, (geofence_id,))
        return cur.rowcount == 1


async def list_geofences(
    conn: AsyncConnection[Any],
    *,
    kind: GeofenceKind | None,
    active: bool | None,
    after_id: int,
    limit: int,
) -> list[GeofenceRow]:
    """A page of geofences in id order after `after_id`, optionally of one kind or activity."""
    params = {
        "kind": None if kind is None else str(kind),
        "active": active,
        "after_id": after_id,
        "limit": limit,
    }
    async with conn.cursor(row_factory=class_row(GeofenceRow)) as cur:
        await cur.execute(LIST_GEOFENCES, params)
        return await cur.fetchall()
