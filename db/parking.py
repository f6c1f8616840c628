"""Whether and where vehicles are parked, as the hub holds them.

The hub decides when a car is parked and holds its position at the parked point until it
really moves (hub/parking.py), and saves that state with the vehicle's conditions
(`vehicle_conditions.state`, key `parking`) in the transaction that stores its fixes; while
parked, `vehicle_state`'s position is that point. Processes other than the hub (the API
deciding whether a trip may end in a parking zone) read it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, LiteralString, NamedTuple

from psycopg.rows import class_row

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime

    import psycopg


class ParkedVehicle(NamedTuple):
    """A parked vehicle's held point."""

    vehicle_id: str
    lat: float
    lon: float
    error_m: float
    """How far the car may be from the point (the GPS's error, narrowed by later fixes)."""
    since: datetime
    """Parked since (the fix that parked it)."""


# Only what hub/parking.py's `Parking.to_json` writes with `parked` true and numbers where
# numbers belong: a record saved by an older hub (no `parking`) means "not known".
_PARKED: LiteralString = """
    SELECT vehicle_id,
           (p->>'lat')::float8 AS lat,
           (p->>'lon')::float8 AS lon,
           (p->>'error_m')::float8 AS error_m,
           to_timestamp((p->>'since')::float8) AS since
    FROM (
        SELECT vehicle_id, state->'parking' AS p
        FROM vehicle_conditions
        WHERE vehicle_id = ANY(%(vehicle_ids)s)
    ) AS c
    WHERE jsonb_typeof(p) = 'object'
      AND p->'parked' = 'true'::jsonb
      AND jsonb_typeof(p->'lat') = 'number'
      AND jsonb_typeof(p->'lon') = 'number'
      AND jsonb_typeof(p->'error_m') = 'number'
      AND jsonb_typeof(p->'since') = 'number'
"""


def parked_vehicles(
    conn: psycopg.Connection[Any], vehicle_ids: Collection[str]
) -> dict[str, ParkedVehicle]:
    """The held point of each of these vehicles that is parked (absent: driving, moved, unknown)."""
    if not vehicle_ids:
        return {}
    with conn.cursor(row_factory=class_row(ParkedVehicle)) as cur:
        rows = cur.execute(_PARKED, {"vehicle_ids": list(vehicle_ids)}).fetchall()
    return {row.vehicle_id: row for row in rows}
