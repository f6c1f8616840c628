"""Every SQL statement about geofences and their per-vehicle state. Nothing here commits.

The API manages definitions (`insert_geofence` ... `list_geofences`); the hub loads the
active ones (`load_active_geofences`), and loads and saves each vehicle's inside/outside
state (`load_geofence_states`, `save_geofence_states`). Any change to `geofences`, whoever
makes it, NOTIFYs `freecar_geofences` when it commits (trigger of migration 0015), so hubs
reload without a restart; deactivating a fence also forgets its vehicles' state.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, LiteralString

from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from db.geofences.model import Geofence, GeofenceKind, GeofenceState, VehiclePosition

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    import psycopg

    from db.geofences.model import GeofenceSpec

log = logging.getLogger(__name__)

# The channel the 0015 trigger notifies on; the payload is the statement (INSERT, UPDATE,
# DELETE or TRUNCATE) and carries nothing a hub needs: it reloads every active fence.
GEOFENCES_CHANNEL: Final = "freecar_geofences"
LISTEN_GEOFENCES: Final[LiteralString] = "LISTEN freecar_geofences"
# A page of `list_geofences` when the caller does not say: a map screen's worth.
DEFAULT_PAGE: Final = 100

# Every statement names its columns in full: no SQL is assembled from pieces. The definition
# statements are public so the API's async repository runs the very same text.
INSERT_GEOFENCE: Final[LiteralString] = """
    INSERT INTO geofences (name, kind, geometry, radius_m, width_m, speed_limit_kmh, schedule,
                           enter_margin_m, exit_margin_m, dwell_s, active)
    VALUES (%(name)s, %(kind)s, %(geometry)s, %(radius_m)s, %(width_m)s, %(speed_limit_kmh)s,
            %(schedule)s, %(enter_margin_m)s, %(exit_margin_m)s, %(dwell_s)s, %(active)s)
    RETURNING id, name, kind, geometry, radius_m, width_m, speed_limit_kmh, schedule,
              enter_margin_m, exit_margin_m, dwell_s, active, created_at, updated_at
"""

UPDATE_GEOFENCE: Final[LiteralString] = """
    UPDATE geofences SET
        name = %(name)s, kind = %(kind)s, geometry = %(geometry)s, radius_m = %(radius_m)s,
        width_m = %(width_m)s, speed_limit_kmh = %(speed_limit_kmh)s, schedule = %(schedule)s,
        enter_margin_m = %(enter_margin_m)s, exit_margin_m = %(exit_margin_m)s,
        dwell_s = %(dwell_s)s, active = %(active)s, updated_at = now()
    WHERE id = %(id)s
    RETURNING id, name, kind, geometry, radius_m, width_m, speed_limit_kmh, schedule,
              enter_margin_m, exit_margin_m, dwell_s, active, created_at, updated_at
"""

DELETE_GEOFENCE: Final[LiteralString] = "DELETE FROM geofences WHERE id = %s"

GET_GEOFENCE: Final[LiteralString] = """
    SELECT id, name, kind, geometry, radius_m, width_m, speed_limit_kmh, schedule,
           enter_margin_m, exit_margin_m, dwell_s, active, created_at, updated_at
    FROM geofences WHERE id = %s
"""

# Keyset pagination: pass the last id of a page as `after_id` for the next one.
LIST_GEOFENCES: Final[LiteralString] = """
    SELECT id, name, kind, geometry, radius_m, width_m, speed_limit_kmh, schedule,
           enter_margin_m, exit_margin_m, dwell_s, active, created_at, updated_at
    FROM geofences
    WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
      AND (%(active)s::boolean IS NULL OR active = %(active)s)
      AND id > %(after_id)s
    ORDER BY id
    LIMIT %(limit)s
"""

# Names are labels, not keys: several fences may share one, hence every id per name.
_IDS_BY_NAME: LiteralString = """
    SELECT name, array_agg(id ORDER BY id) FROM geofences WHERE name = ANY(%s) GROUP BY name
"""

_LOAD_ACTIVE: LiteralString = """
    SELECT id, name, kind, geometry, radius_m, width_m, speed_limit_kmh, schedule,
           enter_margin_m, exit_margin_m, dwell_s, active, created_at, updated_at
    FROM geofences WHERE active ORDER BY id
"""

_LOAD_STATES: LiteralString = """
    SELECT vehicle_id, geofence_id, inside, since, pending_since, fix_ts, fix_lat, fix_lon
    FROM geofence_state
"""

_LOAD_VEHICLE_STATES: LiteralString = """
    SELECT vehicle_id, geofence_id, inside, since, pending_since, fix_ts, fix_lat, fix_lon
    FROM geofence_state WHERE vehicle_id = ANY(%s)
"""

# One statement for the whole batch. Rows only move forward (a row is replaced only by one
# whose fix is not older), so batches may be saved in any order and by several hubs. A
# vehicle or fence deleted, or a fence deactivated, since the batch was evaluated is skipped
# instead of failing the hub's transaction on a foreign key.
_SAVE_STATES: LiteralString = """
    INSERT INTO geofence_state AS s (vehicle_id, geofence_id, inside, since, pending_since,
                                     fix_ts, fix_lat, fix_lon)
    SELECT u.vehicle_id, u.geofence_id, u.inside, u.since, u.pending_since,
           u.fix_ts, u.fix_lat, u.fix_lon
    FROM unnest(%s::text[], %s::bigint[], %s::boolean[], %s::timestamptz[],
                %s::timestamptz[], %s::timestamptz[], %s::double precision[],
                %s::double precision[])
         AS u(vehicle_id, geofence_id, inside, since, pending_since, fix_ts, fix_lat, fix_lon)
    WHERE EXISTS (SELECT 1 FROM vehicles v WHERE v.id = u.vehicle_id)
      AND EXISTS (SELECT 1 FROM geofences g WHERE g.id = u.geofence_id AND g.active)
    ON CONFLICT (vehicle_id, geofence_id) DO UPDATE SET
        inside = EXCLUDED.inside,
        since = EXCLUDED.since,
        pending_since = EXCLUDED.pending_since,
        fix_ts = EXCLUDED.fix_ts,
        fix_lat = EXCLUDED.fix_lat,
        fix_lon = EXCLUDED.fix_lon,
        updated_at = now()
    WHERE s.fix_ts <= EXCLUDED.fix_ts
"""

_LOAD_POSITIONS: LiteralString = """
    SELECT vehicle_id, ts, lat, lon FROM vehicle_state WHERE lat IS NOT NULL
"""
_LOAD_VEHICLE_POSITIONS: LiteralString = """
    SELECT vehicle_id, ts, lat, lon FROM vehicle_state
    WHERE lat IS NOT NULL AND vehicle_id = ANY(%s)
"""


def geofence_params(spec: GeofenceSpec) -> dict[str, Any]:
    """The named parameters of INSERT_GEOFENCE and UPDATE_GEOFENCE (plus `id`) for a spec."""
    return {
        "name": spec.name,
        "kind": str(spec.kind),
        "geometry": Jsonb(spec.geometry),
        "radius_m": spec.radius_m,
        "width_m": spec.width_m,
        "speed_limit_kmh": spec.speed_limit_kmh,
        "schedule": None if spec.schedule is None else Jsonb(spec.schedule.to_json()),
        "enter_margin_m": spec.enter_margin_m,
        "exit_margin_m": spec.exit_margin_m,
        "dwell_s": spec.dwell_s,
        "active": spec.active,
    }


def insert_geofence(conn: psycopg.Connection[Any], spec: GeofenceSpec) -> Geofence:
    """Store a new geofence; hubs hear of it when the caller commits."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(INSERT_GEOFENCE, geofence_params(spec)).fetchone()
    assert row is not None
    return Geofence.model_validate(row)


def update_geofence(
    conn: psycopg.Connection[Any], geofence_id: int, spec: GeofenceSpec
) -> Geofence | None:
    """Replace a geofence's definition; None if there is no such geofence.

    For a partial update, merge first and validate the result:
    `GeofenceSpec.model_validate({**stored.spec().model_dump(), **changes})`.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(UPDATE_GEOFENCE, {**geofence_params(spec), "id": geofence_id}).fetchone()
    return None if row is None else Geofence.model_validate(row)


def delete_geofence(conn: psycopg.Connection[Any], geofence_id: int) -> bool:
    """Delete a geofence (and, by cascade, its vehicles' state); False if it did not exist."""
    with conn.cursor() as cur:
        cur.execute(DELETE_GEOFENCE, (geofence_id,))
        return cur.rowcount == 1


def get_geofence(conn: psycopg.Connection[Any], geofence_id: int) -> Geofence | None:
    """One geofence by id, active or not."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(GET_GEOFENCE, (geofence_id,)).fetchone()
    return None if row is None else Geofence.model_validate(row)


def list_geofences(
    conn: psycopg.Connection[Any],
    *,
    kind: GeofenceKind | None = None,
    active: bool | None = None,
    after_id: int = 0,
    limit: int = DEFAULT_PAGE,
) -> list[Geofence]:
    """A page of geofences in id order, optionally of one kind or activity."""
    params = {
        "kind": None if kind is None else str(kind),
        "active": active,
        "after_id": after_id,
        "limit": limit,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(LIST_GEOFENCES, params).fetchall()
    return [Geofence.model_validate(row) for row in rows]


def geofence_ids_by_name(
    conn: psycopg.Connection[Any], names: Iterable[str]
) -> dict[str, list[int]]:
    """The ids of the stored geofences with these names, oldest first, per name."""
    with conn.cursor() as cur:
        rows = cur.execute(_IDS_BY_NAME, (list(names),)).fetchall()
    return {name: list(ids) for name, ids in rows}


def _log_invalid(geofence_id: int, error: ValidationError) -> None:
    reasons = "; ".join(f"{e['type']}: {e['msg']}" for e in error.errors())
    log.warning("geofence %d is not valid and is ignored: %s", geofence_id, reasons)


def load_active_geofences(
    conn: psycopg.Connection[Any],
    on_invalid: Callable[[int, ValidationError], None] = _log_invalid,
) -> list[Geofence]:
    """Every active geofence, validated; a row that fails validation is reported and skipped.

    Rows written through the API are valid, but anyone with SQL access can write one that is
    not: a hub must keep evaluating the others rather than stop.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_LOAD_ACTIVE).fetchall()
    fences: list[Geofence] = []
    for row in rows:
        try:
            fences.append(Geofence.model_validate(row))
        except ValidationError as error:
            on_invalid(row["id"], error)
    return fences


def load_geofence_states(
    conn: psycopg.Connection[Any], vehicle_ids: Sequence[str] | None = None
) -> list[GeofenceState]:
    """Stored per-vehicle geofence states: all of them, or those of some vehicles."""
    with conn.cursor(row_factory=class_row(GeofenceState)) as cur:
        if vehicle_ids is None:
            return cur.execute(_LOAD_STATES).fetchall()
        return cur.execute(_LOAD_VEHICLE_STATES, (list(vehicle_ids),)).fetchall()


def save_geofence_states(conn: psycopg.Connection[Any], states: Iterable[GeofenceState]) -> int:
    """Upsert changed states in one statement; return how many rows were written.

    A state older (by `fix_ts`) than the stored one is skipped, as is one whose vehicle or
    fence no longer exists or whose fence was deactivated meanwhile.
    """
    newest: dict[tuple[str, int], GeofenceState] = {}
    for state in states:
        key = (state.vehicle_id, state.geofence_id)
        known = newest.get(key)
        # ON CONFLICT may touch a row once per statement: keep one state per key.
        if known is None or known.fix_ts <= state.fix_ts:
            newest[key] = state
    if not newest:
        return 0
    # In key order, so two hubs saving overlapping batches lock rows in the same order.
    rows = [newest[key] for key in sorted(newest)]
    columns = (
        [s.vehicle_id for s in rows],
        [s.geofence_id for s in rows],
        [s.inside for s in rows],
        [s.since for s in rows],
        [s.pending_since for s in rows],
        [s.fix_ts for s in rows],
        [s.fix_lat for s in rows],
        [s.fix_lon for s in rows],
    )
    with conn.cursor() as cur:
        cur.execute(_SAVE_STATES, columns)
        return cur.rowcount


def load_last_positions(
    conn: psycopg.Connection[Any], vehicle_ids: Sequence[str] | None = None
) -> list[VehiclePosition]:
    """Newest stored positions (`vehicle_state`), the starts of the next segments.

    Every vehicle's, or those of some vehicles.
    """
    with conn.cursor(row_factory=class_row(VehiclePosition)) as cur:
        if vehicle_ids is None:
            return cur.execute(_LOAD_POSITIONS).fetchall()
        return cur.execute(_LOAD_VEHICLE_POSITIONS, (list(vehicle_ids),)).fetchall()
