"""Every SQL statement the hub runs, by what it manages. Nothing here commits.

The writer owns a batch's transaction (`hub.steps`), the dispatcher its own rounds:

- `telemetry`: fixes (exactly once, by binary COPY) and dead letters;
- `states`: `vehicle_state`, each vehicle's newest state, which only moves forward;
- `commands`: `vehicle_commands` as the hub moves them (claim, acks, confirmation, expiry);
- `event_state`: what event detection keeps per vehicle (conditions, events, the per-vehicle
  turn lock that lets several hubs share a fleet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, LiteralString

if TYPE_CHECKING:
    from collections.abc import Collection

    import psycopg


def rows_of_vehicles(
    conn: psycopg.Connection[Any],
    every: LiteralString,
    some: LiteralString,
    vehicle_ids: Collection[str] | None,
) -> list[tuple[Any, ...]]:
    """The rows of `every` vehicle, or of `some` (a query on `%(vehicle_ids)s`)."""
    if vehicle_ids is None:
        return conn.execute(every).fetchall()
    return conn.execute(some, {"vehicle_ids": list(vehicle_ids)}).fetchall()
