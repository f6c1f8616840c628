"""Every SQL statement the hub runs. The writer owns the transaction; nothing here commits.

Per batch: fixes go through `db.telemetry.insert_telemetry` (binary COPY into staging, then
INSERT ... ON CONFLICT DO NOTHING), dead letters and command acks are appended, and
`vehicle_state` is upserted once per vehicle. The state only moves forward: a fix replaces
the stored one only if it is newer (`vehicle_state.ts < EXCLUDED.ts`), and online/offline
evidence only if it is newer than `presence_at`, so batches may be applied in any order and
by several hubs at once. State exists only for vehicles in `vehicles` (foreign key).
Event state (conditions, geofence state) is not order-free: a batch first locks its
vehicles (`lock_vehicles`) and compares their revisions (`state_revisions`) with the ones
it wrote last, so several hubs take turns on a vehicle and each sees the other's changes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, LiteralString

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from db.telemetry import insert_telemetry

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence
    from datetime import datetime
    from uuid import UUID

    import psycopg

    from db.telemetry import TelemetryRow
    from hub.batch import CommandAck, DeadLetter, Presence
    from hub.events.model import Event

# The advisory-lock key space of vehicles' event state (the first of the two int4 keys;
# "FC" in ASCII), and how many stripes the vehicles share (see `lock_vehicles`).
LOCK_SPACE: Final = 0x4643
LOCK_STRIPES: Final = 1024


@dataclass(frozen=True, slots=True)
class StoredState:
    """What the filters need from a vehicle's stored state at start-up."""

    vehicle_id: str
    ts: datetime
    lat: float | None
    lon: float | None
    locked: bool
    doors_open: bool
    engine_on: bool
    alarm: bool | None


@dataclass(frozen=True, slots=True)
class LiveState:
    """A vehicle's state as fanned out to live maps, straight from `vehicle_state`."""

    vehicle_id: str
    ts: datetime
    lat: float | None
    lon: float | None
    speed_kmh: float | None
    heading: float | None
    odometer_km: float | None
    fuel_pct: float | None
    battery_pct: float | None
    locked: bool
    doors_open: bool
    engine_on: bool
    alarm: bool | None
    online: bool
    last_seen_at: datetime
    rev: int
    """Revision of the row after this write (see `lock_vehicles`)."""


# One row per vehicle the batch heard from: its newest kept fix (null `ts` when there is
# none) and the batch's presence evidence. Binary COPY fills it: building SQL arrays for a
# thousand vehicles costs far more in Python than copying rows.
_CREATE_STATE_STAGING: LiteralString = """
    CREATE TEMPORARY TABLE IF NOT EXISTS vehicle_state_staging (
        vehicle_id text, ts timestamptz, seq bigint, lat double precision,
        lon double precision, speed_kmh real, heading real, odometer_km double precision,
        fuel_pct real, battery_pct real, locked boolean, doors_open boolean,
        engine_on boolean, alarm boolean, online boolean, online_at timestamptz,
        seen_at timestamptz
    ) ON COMMIT DELETE ROWS
"""

_COPY_STATE_STAGING: LiteralString = """
    COPY vehicle_state_staging (vehicle_id, ts, seq, lat, lon, speed_kmh, heading,
                                odometer_km, fuel_pct, battery_pct, locked, doors_open,
                                engine_on, alarm, online, online_at, seen_at)
    FROM STDIN (FORMAT BINARY)
"""

_STATE_STAGING_TYPES = (
    "text", "timestamptz", "int8", "float8", "float8", "float4", "float4", "float8",
    "float4", "float4", "bool", "bool", "bool", "bool", "bool", "timestamptz", "timestamptz",
)  # fmt: skip

_LOAD_STATES: LiteralString = """
    SELECT vehicle_id, ts, lat, lon, locked, doors_open, engine_on, alarm FROM vehicle_state
"""

# A fix column moves only with a newer fix; a null position keeps the last known one and a
# null fuel, battery or alarm keeps the last value (the unit did not say, nothing changed).
_ADVANCE_STATES: LiteralString = """
    INSERT INTO vehicle_state AS s (
        vehicle_id, ts, seq, lat, lon, speed_kmh, heading, odometer_km, fuel_pct,
        battery_pct, locked, doors_open, engine_on, alarm,
        online, online_changed_at, presence_at, last_seen_at, rev
    )
    SELECT u.vehicle_id, u.ts, u.seq, u.lat, u.lon, u.speed_kmh, u.heading, u.odometer_km,
           u.fuel_pct, u.battery_pct, u.locked, u.doors_open, u.engine_on, u.alarm,
           coalesce(u.online, true), u.online_at, u.online_at, u.seen_at, 1
    FROM vehicle_state_staging AS u
    WHERE u.ts IS NOT NULL AND EXISTS (SELECT 1 FROM vehicles v WHERE v.id = u.vehicle_id)
    ON CONFLICT (vehicle_id) DO UPDATE SET
        ts = CASE WHEN s.ts < EXCLUDED.ts THEN EXCLUDED.ts ELSE s.ts END,
        seq = CASE WHEN s.ts < EXCLUDED.ts THEN EXCLUDED.seq ELSE s.seq END,
        lat = CASE WHEN s.ts < EXCLUDED.ts AND EXCLUDED.lat IS NOT NULL
                   THEN EXCLUDED.lat ELSE s.lat END,
        lon = CASE WHEN s.ts < EXCLUDED.ts AND EXCLUDED.lat IS NOT NULL
                   THEN EXCLUDED.lon ELSE s.lon END,
        speed_kmh = CASE WHEN s.ts < EXCLUDED.ts THEN EXCLUDED.speed_kmh ELSE s.speed_kmh END,
        heading = CASE WHEN s.ts < EXCLUDED.ts THEN EXCLUDED.heading ELSE s.heading END,
        odometer_km = CASE WHEN s.ts < EXCLUDED.ts
                           THEN EXCLUDED.odometer_km ELSE s.odometer_km END,
        fuel_pct = CASE WHEN s.ts < EXCLUDED.ts
                        THEN coalesce(EXCLUDED.fuel_pct, s.fuel_pct) ELSE s.fuel_pct END,
        battery_pct = CASE WHEN s.ts < EXCLUDED.ts
                           THEN coalesce(EXCLUDED.battery_pct, s.battery_pct)
                           ELSE s.battery_pct END,
        locked = CASE WHEN s.ts < EXCLUDED.ts THEN EXCLUDED.locked ELSE s.locked END,
        doors_open = CASE WHEN s.ts < EXCLUDED.ts THEN EXCLUDED.doors_open ELSE s.doors_open END,
        engine_on = CASE WHEN s.ts < EXCLUDED.ts THEN EXCLUDED.engine_on ELSE s.engine_on END,
        alarm = CASE WHEN s.ts < EXCLUDED.ts
                     THEN coalesce(EXCLUDED.alarm, s.alarm) ELSE s.alarm END,
        online = CASE WHEN EXCLUDED.presence_at > coalesce(s.presence_at, '-infinity')
                      THEN EXCLUDED.online ELSE s.online END,
        online_changed_at = CASE
            WHEN EXCLUDED.presence_at > coalesce(s.presence_at, '-infinity')
                 AND (EXCLUDED.online IS DISTINCT FROM s.online OR s.online_changed_at IS NULL)
            THEN EXCLUDED.presence_at ELSE s.online_changed_at END,
        presence_at = greatest(s.presence_at, EXCLUDED.presence_at),
        last_seen_at = greatest(s.last_seen_at, EXCLUDED.last_seen_at),
        updated_at = now(),
        rev = s.rev + 1
    RETURNING s.vehicle_id, s.ts, s.lat, s.lon, s.speed_kmh, s.heading, s.odometer_km,
              s.fuel_pct, s.battery_pct, s.locked, s.doors_open, s.engine_on, s.alarm,
              s.online, s.last_seen_at, s.rev
"""

# Vehicles heard from without a kept fix (status messages, acks, filtered fixes).
_UPDATE_PRESENCE: LiteralString = """
    UPDATE vehicle_state AS s SET
        online = CASE WHEN p.online_at > coalesce(s.presence_at, '-infinity')
                      THEN p.online ELSE s.online END,
        online_changed_at = CASE
            WHEN p.online_at > coalesce(s.presence_at, '-infinity')
                 AND (p.online IS DISTINCT FROM s.online OR s.online_changed_at IS NULL)
            THEN p.online_at ELSE s.online_changed_at END,
        presence_at = greatest(s.presence_at, p.online_at),
        last_seen_at = greatest(s.last_seen_at, p.seen_at),
        updated_at = now(),
        rev = s.rev + 1
    FROM vehicle_state_staging AS p
    WHERE p.ts IS NULL AND s.vehicle_id = p.vehicle_id
    RETURNING s.vehicle_id, s.ts, s.lat, s.lon, s.speed_kmh, s.heading, s.odometer_km,
              s.fuel_pct, s.battery_pct, s.locked, s.doors_open, s.engine_on, s.alarm,
              s.online, s.last_seen_at, s.rev
"""

_INSERT_DEAD_LETTERS: LiteralString = """
    INSERT INTO dead_letters (topic, payload, reason, detail, received_at)
    SELECT * FROM unnest(
        %(topic)s::text[], %(payload)s::bytea[], %(reason)s::text[], %(detail)s::text[],
        %(received_at)s::timestamptz[]
    )
"""

# A vehicle's answer to a command the hub sent: `done` means acked (for lock and unlock,
# confirmation comes with telemetry showing the new state; for the others the ack is the
# end), `rejected`/`failed` are final. Only a command in `sent` moves, and only by its own
# vehicle: a repeated ack, or one from another vehicle, does not.
_RECORD_COMMAND_ACKS: LiteralString = """
    UPDATE vehicle_commands AS c SET
        status = CASE a.status WHEN 'done' THEN 'acked' ELSE a.status END,
        acked_at = a.received_at,
        finished_at = CASE WHEN a.status = 'done' AND c.action IN ('lock', 'unlock')
                           THEN c.finished_at ELSE a.received_at END,
        outcome_reason = a.reason
    FROM unnest(
        %(cmd_id)s::uuid[], %(vehicle_id)s::text[], %(status)s::text[], %(reason)s::text[],
        %(received_at)s::timestamptz[]
    ) AS a(cmd_id, vehicle_id, status, reason, received_at)
    WHERE c.id = a.cmd_id AND c.vehicle_id = a.vehicle_id AND c.status = 'sent'
    RETURNING c.id, c.vehicle_id, c.action, c.status, c.outcome_reason, c.issued_by,
              a.received_at AS at
"""

# Acked lock and unlock commands are confirmed once the vehicle's state shows the lock state
# they asked for: the car's own report, not only its word in the ack.
_CONFIRM_COMMANDS: LiteralString = """
    UPDATE vehicle_commands AS c SET status = 'confirmed', confirmed_at = now(),
                                     finished_at = now()
    FROM vehicle_state AS s
    WHERE c.status = 'acked' AND c.vehicle_id = ANY(%(vehicle_ids)s)
      AND s.vehicle_id = c.vehicle_id
      AND ((c.action = 'lock' AND s.locked) OR (c.action = 'unlock' AND NOT s.locked))
"""

# Claiming marks the commands sent and commits before anything is published (side effects
# after the commit): a second hub skips what is locked and never sees these as queued, so
# each command goes out once. One that cannot be published is put back (`_UNCLAIM`); a hub
# that dies in between leaves it `sent`, and the expiry sweep ends it at its TTL.
_CLAIM_COMMANDS: LiteralString = """
    UPDATE vehicle_commands AS c SET status = 'sent', sent_at = now(), sent_by = %(hub_id)s,
                                     key_id = %(key_id)s
    FROM (SELECT id FROM vehicle_commands
          WHERE status = 'queued'
            AND expires_at > now() + make_interval(secs => %(min_remaining_s)s)
          ORDER BY created_at
          LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED) AS q
    WHERE c.id = q.id
    RETURNING c.id, c.vehicle_id, c.action, c.expires_at
"""

_UNCLAIM_COMMANDS: LiteralString = """
    UPDATE vehicle_commands SET status = 'queued', sent_at = NULL, sent_by = NULL, key_id = NULL
    WHERE id = ANY(%(ids)s) AND status = 'sent'
"""

# A queued command with too little life left to be sent will never go; a sent one whose
# vehicle stayed silent past its TTL (plus a grace for an ack in flight) never will either.
# The car itself refuses a token past its `exp`, so `expired` here means "did not run".
_EXPIRE_COMMANDS: LiteralString = """
    UPDATE vehicle_commands AS c SET
        status = 'expired', finished_at = now(),
        outcome_reason = CASE c.status WHEN 'queued' THEN 'not_sent_in_time'
                                       ELSE 'no_answer_in_time' END
    FROM (SELECT id FROM vehicle_commands
          WHERE (status = 'queued'
                 AND expires_at <= now() + make_interval(secs => %(min_remaining_s)s))
             OR (status = 'sent' AND expires_at <= now() - make_interval(secs => %(grace_s)s))
          FOR UPDATE SKIP LOCKED) AS e
    WHERE c.id = e.id
    RETURNING c.id, c.vehicle_id, c.action, c.status, c.outcome_reason, c.issued_by,
              c.finished_at AS at
"""

_LOAD_CONDITIONS: LiteralString = "SELECT vehicle_id, state FROM vehicle_conditions"
_LOAD_VEHICLE_CONDITIONS: LiteralString = """
    SELECT vehicle_id, state FROM vehicle_conditions WHERE vehicle_id = ANY(%(vehicle_ids)s)
"""

_NEWEST_FIXES: LiteralString = "SELECT vehicle_id, extract(epoch FROM ts) FROM vehicle_state"
_NEWEST_VEHICLE_FIXES: LiteralString = """
    SELECT vehicle_id, extract(epoch FROM ts) FROM vehicle_state
    WHERE vehicle_id = ANY(%(vehicle_ids)s)
"""

_STATE_REVISIONS: LiteralString = "SELECT vehicle_id, rev FROM vehicle_state"
_VEHICLE_STATE_REVISIONS: LiteralString = """
    SELECT vehicle_id, rev FROM vehicle_state WHERE vehicle_id = ANY(%(vehicle_ids)s)
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

# Events only for vehicles in the inventory (the foreign key), like vehicle_state.
_STORE_EVENTS: LiteralString = """
    INSERT INTO events (vehicle_id, kind, ts, lat, lon, geofence_id, details, notify)
    SELECT e.vehicle_id, e.kind, e.ts, e.lat, e.lon, e.geofence_id, e.details, e.notify
    FROM unnest(
        %(vehicle_id)s::text[], %(kind)s::text[], %(ts)s::timestamptz[],
        %(lat)s::float8[], %(lon)s::float8[], %(geofence_id)s::bigint[],
        %(details)s::jsonb[], %(notify)s::bool[]
    ) AS e(vehicle_id, kind, ts, lat, lon, geofence_id, details, notify)
    WHERE EXISTS (SELECT 1 FROM vehicles v WHERE v.id = e.vehicle_id)
    RETURNING id, vehicle_id, kind, ts
"""

_RENTED_VEHICLES: LiteralString = "SELECT id FROM vehicles WHERE status = 'rented'"

_SILENT_VEHICLES: LiteralString = """
    SELECT vehicle_id FROM vehicle_state
    WHERE online AND last_seen_at < now() - make_interval(secs => %(timeout_s)s)
"""

# The silence is checked again: a fix may have arrived since `_SILENT_VEHICLES` looked.
_MARK_OFFLINE: LiteralString = """
    UPDATE vehicle_state SET
        online = false, online_changed_at = now(), presence_at = now(), updated_at = now(),
        rev = rev + 1
    WHERE vehicle_id = ANY(%(vehicle_ids)s)
      AND online AND last_seen_at < now() - make_interval(secs => %(timeout_s)s)
    RETURNING vehicle_id, ts, lat, lon, speed_kmh, heading, odometer_km, fuel_pct,
              battery_pct, locked, doors_open, engine_on, alarm, online, last_seen_at, rev
"""


def load_states(conn: psycopg.Connection[Any]) -> list[StoredState]:
    """Every stored vehicle state, to seed the filters."""
    with conn.cursor(row_factory=class_row(StoredState)) as cur:
        return cur.execute(_LOAD_STATES).fetchall()


def store_telemetry(conn: psycopg.Connection[Any], rows: Iterable[TelemetryRow]) -> int:
    """Store fixes exactly once; return how many were new."""
    return insert_telemetry(conn, rows)


def store_dead_letters(conn: psycopg.Connection[Any], letters: Sequence[DeadLetter]) -> None:
    """Keep refused messages byte for byte, with the reason."""
    if not letters:
        return
    conn.execute(
        _INSERT_DEAD_LETTERS,
        {
            "topic": [d.topic for d in letters],
            "payload": [d.payload for d in letters],
            "reason": [d.reason for d in letters],
            "detail": [d.detail for d in letters],
            "received_at": [d.received_at for d in letters],
        },
    )


def advance_states(
    conn: psycopg.Connection[Any],
    latest: Mapping[str, TelemetryRow],
    presence: Mapping[str, Presence],
) -> list[LiveState]:
    """Move vehicle states forward; return the states of the vehicles that were touched.

    `latest` holds each vehicle's newest kept fix, `presence` what the batch heard from
    every vehicle; vehicles only in `presence` get their online/last-seen columns updated.
    """
    presence_only = [(vid, heard) for vid, heard in presence.items() if vid not in latest]
    if not latest and not presence_only:
        return []
    with conn.cursor() as cur:
        cur.execute(_CREATE_STATE_STAGING)
        with cur.copy(_COPY_STATE_STAGING) as copy:
            copy.set_types(_STATE_STAGING_TYPES)
            for vehicle_id, row in latest.items():
                heard = presence.get(vehicle_id)
                fix_columns = row[:14]  # vehicle_id .. alarm, as in the staging table
                if heard is None:
                    copy.write_row((*fix_columns, None, None, row.ts))
                else:
                    copy.write_row((*fix_columns, heard.online, heard.online_at, heard.seen_at))
            no_fix = (None,) * 13
            for vehicle_id, heard in presence_only:
                copy.write_row((vehicle_id, *no_fix, heard.online, heard.online_at, heard.seen_at))
    touched: list[LiveState] = []
    with conn.cursor(row_factory=class_row(LiveState)) as cur:
        if latest:
            touched += cur.execute(_ADVANCE_STATES).fetchall()
        if presence_only:
            touched += cur.execute(_UPDATE_PRESENCE).fetchall()
        # Emptied now, not only at commit: the isolating writer may call this twice.
        cur.execute("DELETE FROM vehicle_state_staging")
    return touched


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """A command that just moved on, with what the car (or the clock) said."""

    id: UUID
    vehicle_id: str
    action: str
    status: str
    outcome_reason: str | None
    issued_by: str
    at: datetime


def record_command_acks(
    conn: psycopg.Connection[Any], acks: Sequence[CommandAck]
) -> list[CommandOutcome]:
    """Move acknowledged commands on from `sent`; return those that moved."""
    if not acks:
        return []
    with conn.cursor(row_factory=class_row(CommandOutcome)) as cur:
        cur.execute(
            _RECORD_COMMAND_ACKS,
            {
                "cmd_id": [a.cmd_id for a in acks],
                "vehicle_id": [a.vehicle_id for a in acks],
                "status": [a.status for a in acks],
                "reason": [a.reason for a in acks],
                "received_at": [a.received_at for a in acks],
            },
        )
        return cur.fetchall()


def confirm_commands(conn: psycopg.Connection[Any], vehicle_ids: Collection[str]) -> int:
    """Confirm the acked lock/unlock commands of these vehicles that their state bears out."""
    if not vehicle_ids:
        return 0
    return conn.execute(_CONFIRM_COMMANDS, {"vehicle_ids": list(vehicle_ids)}).rowcount


@dataclass(frozen=True, slots=True)
class ClaimedCommand:
    """A command this hub has claimed to send."""

    id: UUID
    vehicle_id: str
    action: str
    expires_at: datetime


def claim_commands(
    conn: psycopg.Connection[Any],
    *,
    hub_id: str,
    key_id: str,
    min_remaining_s: int,
    limit: int,
) -> list[ClaimedCommand]:
    """Mark up to `limit` queued commands sent by this hub; the caller commits, then sends."""
    params = {
        "hub_id": hub_id,
        "key_id": key_id,
        "min_remaining_s": min_remaining_s,
        "limit": limit,
    }
    with conn.cursor(row_factory=class_row(ClaimedCommand)) as cur:
        return cur.execute(_CLAIM_COMMANDS, params).fetchall()


def unclaim_commands(conn: psycopg.Connection[Any], ids: Collection[UUID]) -> int:
    """Put claimed commands that could not be published back in the queue."""
    if not ids:
        return 0
    return conn.execute(_UNCLAIM_COMMANDS, {"ids": list(ids)}).rowcount


def expire_commands(
    conn: psycopg.Connection[Any], *, min_remaining_s: int, grace_s: float
) -> list[CommandOutcome]:
    """End the commands that can no longer run; return them."""
    params = {"min_remaining_s": min_remaining_s, "grace_s": grace_s}
    with conn.cursor(row_factory=class_row(CommandOutcome)) as cur:
        return cur.execute(_EXPIRE_COMMANDS, params).fetchall()


def _all_or_some(
    conn: psycopg.Connection[Any],
    every: LiteralString,
    some: LiteralString,
    vehicle_ids: Collection[str] | None,
) -> list[tuple[Any, ...]]:
    """The rows of `every` vehicle, or of `some` (a query on `%(vehicle_ids)s`)."""
    if vehicle_ids is None:
        return conn.execute(every).fetchall()
    return conn.execute(some, {"vehicle_ids": list(vehicle_ids)}).fetchall()


def load_conditions(
    conn: psycopg.Connection[Any], vehicle_ids: Collection[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Saved status-event conditions as stored JSON: every vehicle's, or those of some."""
    rows = _all_or_some(conn, _LOAD_CONDITIONS, _LOAD_VEHICLE_CONDITIONS, vehicle_ids)
    return dict(rows)


def newest_fixes(
    conn: psycopg.Connection[Any], vehicle_ids: Collection[str] | None = None
) -> dict[str, float]:
    """Each vehicle's newest stored fix time in epoch seconds: every vehicle's, or some."""
    rows = _all_or_some(conn, _NEWEST_FIXES, _NEWEST_VEHICLE_FIXES, vehicle_ids)
    return {vid: float(ts) for vid, ts in rows}


def state_revisions(
    conn: psycopg.Connection[Any], vehicle_ids: Collection[str] | None = None
) -> dict[str, int]:
    """Each vehicle state's revision (`vehicle_state.rev`): every vehicle's, or some."""
    rows = _all_or_some(conn, _STATE_REVISIONS, _VEHICLE_STATE_REVISIONS, vehicle_ids)
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
    """An event's id once stored."""

    id: int
    vehicle_id: str
    kind: str
    ts: datetime


def store_events(conn: psycopg.Connection[Any], events: Sequence[Event]) -> list[StoredEvent]:
    """Store events (for inventory vehicles only); return what was stored."""
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


def silent_vehicles(conn: psycopg.Connection[Any], timeout_s: float) -> list[str]:
    """Online vehicles not heard from for `timeout_s` (lock them, then `mark_offline`)."""
    rows = conn.execute(_SILENT_VEHICLES, {"timeout_s": timeout_s}).fetchall()
    return [vid for (vid,) in rows]


def mark_offline(
    conn: psycopg.Connection[Any], vehicle_ids: Collection[str], timeout_s: float
) -> list[LiveState]:
    """Mark offline those of `vehicle_ids` still silent for `timeout_s`; return them."""
    if not vehicle_ids:
        return []
    params = {"vehicle_ids": list(vehicle_ids), "timeout_s": timeout_s}
    with conn.cursor(row_factory=class_row(LiveState)) as cur:
        return cur.execute(_MARK_OFFLINE, params).fetchall()
