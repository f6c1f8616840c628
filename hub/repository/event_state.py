"""What event detection keeps per vehicle: conditions, events, and the turn lock.

Event state (conditions, geofence state) is not order-free like `vehicle_state`: a batch
first locks its vehicles (`lock_vehicles`) and compares their revisions
(`states.state_revisions`) with the ones it wrote last, so several hubs take turns on a
vehicle and each sees the other's changes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, LiteralString

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from hub.repository import rows_of_vehicles

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

    import psycopg

    from hub.events.model import Event

# The advisory-lock key space of vehicles' event state (the first of the two int4 keys;
# "FC" in ASCII), and how many stripes the vehicles share (see `lock_vehicles`).
LOCK_SPACE: Final = 0x4643
LOCK_STRIPES: Final = 1024


_LOAD_CONDITIONS: LiteralString = "SELECT vehicle_id, state FROM vehicle_conditions"
_LOAD_VEHICLE_CONDITIONS: LiteralString = """
    SELECT vehicle_id, state FROM vehicle_conditions WHERE vehicle_id = ANY(%(vehicle_ids)s)
"""

# unnest() hands the stripes over in the array's order, and the aggregate takes the locks
# row by row in that order: every hub locks in ascending stripe order, so none deadlocks.
_LOCK_STRIPES: LiteralString = """
    SELECT count(pg_advisory_xact_lock(%(space)s, stripe))
    FROM unnest(%(stripes)s::int4[]) AS stripe
"""

_SAVE_CONDITIONS: LiteralString = """
    INSERT INTO vehicle_conditions AS c (vehicle_id, state)
    SELECT u.vehicle_id, u.state
    FROM unnest(%(vehicle_id)s::text[], %(state)s::jsonb[]) AS u(vehicle_id, state)
    WHERE EXISTS (SELECT 1 FROM vehicles v WHERE v.id = u.vehicle_id)
    ON CONFLICT (vehicle_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()
"""

# Events only for vehicles in the inventory (the foreign key), like vehicle_state. Each
# comes back with its position in the arrays (from 0): ids are taken from the sequence
# first, so each stored row is matched to its own event even when two events share a
# vehicle, kind and time (one fix entering two fences). The input is materialised once
# (it calls nextval), so the ids read back are those inserted.
_STORE_EVENTS: LiteralString = """
    WITH input AS MATERIALIZED (
        SELECT nextval(pg_get_serial_sequence('events', 'id')) AS id, e.*
        FROM unnest(
            %(vehicle_id)s::text[], %(kind)s::text[], %(ts)s::timestamptz[],
            %(lat)s::float8[], %(lon)s::float8[], %(geofence_id)s::bigint[],
            %(details)s::jsonb[], %(notify)s::bool[]
        ) WITH ORDINALITY AS e(vehicle_id, kind, ts, lat, lon, geofence_id, details, notify, n)
        WHERE EXISTS (SELECT 1 FROM vehicles v WHERE v.id = e.vehicle_id)
    ), stored AS (
        INSERT INTO events (id, vehicle_id, kind, ts, lat, lon, geofence_id, details, notify)
        OVERRIDING SYSTEM VALUE
        SELECT id, vehicle_id, kind, ts, lat, lon, geofence_id, details, notify FROM input
        RETURNING id
    )
    SELECT stored.id, input.n - 1 AS position FROM stored JOIN input USING (id)
    ORDER BY input.n
"""

_RENTED_VEHICLES: LiteralString = "SELECT id FROM vehicles WHERE status = 'rented'"


def load_conditions(
    conn: psycopg.Connection[Any], vehicle_ids: Collection[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Saved status-event conditions as stored JSON: every vehicle's, or those of some."""
    rows = rows_of_vehicles(conn, _LOAD_CONDITIONS, _LOAD_VEHICLE_CONDITIONS, vehicle_ids)
    return dict(rows)


def lock_stripe(vehicle_id: str) -> int:
    """The lock stripe of a vehicle: the same on every hub (crc32, not Python's hash)."""
    return zlib.crc32(vehicle_id.encode()) % LOCK_STRIPES


def lock_vehicles(conn: psycopg.Connection[Any], vehicle_ids: Iterable[str]) -> None:
    """Hold these vehicles' event state for the rest of the caller's transaction.

    Two hubs sharing a subscription may each get some of one vehicle's messages. The one
    that locks second waits for the other's commit, then sees its state revision (and
    reloads what moved). Vehicles share 1,024 stripes: a transaction never holds more
    locks than that (each takes a slot of the server's lock table, which is sized by
    max_locks_per_transaction x max_connections), at the price of now and then waiting
    for a vehicle it does not share.
    """
    stripes = sorted({lock_stripe(vid) for vid in vehicle_ids})
    if stripes:
        conn.execute(_LOCK_STRIPES, {"space": LOCK_SPACE, "stripes": stripes})


def save_conditions(conn: psycopg.Connection[Any], states: Mapping[str, dict[str, Any]]) -> None:
    """Save changed conditions (JSON per vehicle)."""
    if not states:
        return
    conn.execute(
        _SAVE_CONDITIONS,
        {"vehicle_id": list(states), "state": [Jsonb(s) for s in states.values()]},
    )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event's id once stored, and its position among the events given to store."""

    id: int
    position: int


def store_events(conn: psycopg.Connection[Any], events: Sequence[Event]) -> list[StoredEvent]:
    """Store events (for inventory vehicles only); return the ids and positions of those stored."""
    if not events:
        return []
    with conn.cursor(row_factory=class_row(StoredEvent)) as cur:
        return cur.execute(
            _STORE_EVENTS,
            {
                "vehicle_id": [e.vehicle_id for e in events],
                "kind": [e.kind.value for e in events],
                "ts": [e.ts for e in events],
                "lat": [e.lat for e in events],
                "lon": [e.lon for e in events],
                "geofence_id": [e.geofence_id for e in events],
                "details": [Jsonb(e.details) for e in events],
                "notify": [e.notify for e in events],
            },
        ).fetchall()


def rented_vehicles(conn: psycopg.Connection[Any]) -> set[str]:
    """Vehicles with a trip under way (status `rented`)."""
    return {vid for (vid,) in conn.execute(_RENTED_VEHICLES).fetchall()}
