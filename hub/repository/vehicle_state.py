"""`vehicle_state`: each vehicle's newest state, moved forward by batches and the sweep.

The state only moves forward: a fix replaces the stored one only if it is newer (by the
unit's `seq`, then its clock: `hub.ordering`), and online/offline evidence only if it is
newer than `presence_at`, so batches may be applied in any order and by several hubs at
once. State exists only for vehicles in `vehicles` (foreign key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, LiteralString

from psycopg.rows import class_row

from hub.repository import rows_of_vehicles

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    import psycopg

    from db.telemetry import TelemetryRow
    from hub.batch import Presence


@dataclass(frozen=True, slots=True)
class StoredState:
    """What the filters need from a vehicle's stored state at start-up."""

    vehicle_id: str
    ts: datetime
    seq: int
    lat: float | None
    lon: float | None
    locked: bool
    doors_open: bool
    engine_on: bool
    alarm: bool | None


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StateMark:
    """Where a vehicle's state stood when a batch began: its revision and newest position."""

    vehicle_id: str
    rev: int
    ts_ms: int
    seq: int | None
    lat: float | None
    lon: float | None

    @property
    def ts(self) -> datetime:
        """The newest fix's time."""
        return _EPOCH + timedelta(milliseconds=self.ts_ms)


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
    SELECT vehicle_id, ts, seq, lat, lon, locked, doors_open, engine_on, alarm
    FROM vehicle_state
"""

# A fix column moves only with a newer fix (`vehicle_fix_is_newer`, migration 0061: the
# unit's seq first, its clock second; hub/ordering.py is the same rule), decided once per
# row in the sub-select; a null position
# keeps the last known one and a null fuel, battery or alarm keeps the last value (the unit
# did not say, nothing changed). `%(allowance)s` is the hub's future bound.
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
        (ts, seq, lat, lon, speed_kmh, heading, odometer_km, fuel_pct, battery_pct, locked,
         doors_open, engine_on, alarm) = (
            SELECT
                CASE WHEN n.newer THEN EXCLUDED.ts ELSE s.ts END,
                CASE WHEN n.newer THEN EXCLUDED.seq ELSE s.seq END,
                CASE WHEN n.newer AND EXCLUDED.lat IS NOT NULL THEN EXCLUDED.lat ELSE s.lat END,
                CASE WHEN n.newer AND EXCLUDED.lat IS NOT NULL THEN EXCLUDED.lon ELSE s.lon END,
                CASE WHEN n.newer THEN EXCLUDED.speed_kmh ELSE s.speed_kmh END,
                CASE WHEN n.newer THEN EXCLUDED.heading ELSE s.heading END,
                CASE WHEN n.newer THEN EXCLUDED.odometer_km ELSE s.odometer_km END,
                CASE WHEN n.newer THEN coalesce(EXCLUDED.fuel_pct, s.fuel_pct) ELSE s.fuel_pct END,
                CASE WHEN n.newer THEN coalesce(EXCLUDED.battery_pct, s.battery_pct)
                     ELSE s.battery_pct END,
                CASE WHEN n.newer THEN EXCLUDED.locked ELSE s.locked END,
                CASE WHEN n.newer THEN EXCLUDED.doors_open ELSE s.doors_open END,
                CASE WHEN n.newer THEN EXCLUDED.engine_on ELSE s.engine_on END,
                CASE WHEN n.newer THEN coalesce(EXCLUDED.alarm, s.alarm) ELSE s.alarm END
            FROM (SELECT vehicle_fix_is_newer(EXCLUDED.seq, EXCLUDED.ts, s.seq, s.ts,
                                              %(allowance)s) AS newer) AS n
        ),
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

_NEWEST_FIXES: LiteralString = "SELECT vehicle_id, extract(epoch FROM ts), seq FROM vehicle_state"
_NEWEST_VEHICLE_FIXES: LiteralString = """
    SELECT vehicle_id, extract(epoch FROM ts), seq FROM vehicle_state
    WHERE vehicle_id = ANY(%(vehicle_ids)s)
"""

_STATE_REVISIONS: LiteralString = "SELECT vehicle_id, rev FROM vehicle_state"
_VEHICLE_STATE_REVISIONS: LiteralString = """
    SELECT vehicle_id, rev FROM vehicle_state WHERE vehicle_id = ANY(%(vehicle_ids)s)
"""

# Milliseconds as an integer: thousands of rows a batch, and integers are cheap to read.
_STATE_MARKS: LiteralString = """
    SELECT vehicle_id, rev, (extract(epoch FROM ts) * 1000)::int8 AS ts_ms, seq, lat, lon
    FROM vehicle_state WHERE vehicle_id = ANY(%(vehicle_ids)s)
"""

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


def advance_states(
    conn: psycopg.Connection[Any],
    latest: Mapping[str, TelemetryRow],
    presence: Mapping[str, Presence],
    *,
    allowance: timedelta,
) -> list[LiveState]:
    """Move vehicle states forward; return the states of the vehicles that were touched.

    `latest` holds each vehicle's newest kept fix, `presence` what the batch heard from
    every vehicle; vehicles only in `presence` get their online/last-seen columns updated.
    `allowance` is the hub's future bound, which orders fixes (`hub.ordering`).
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
            touched += cur.execute(_ADVANCE_STATES, {"allowance": allowance}).fetchall()
        if presence_only:
            touched += cur.execute(_UPDATE_PRESENCE).fetchall()
        # Emptied now, not only at commit: the isolating writer may call this twice.
        cur.execute("DELETE FROM vehicle_state_staging")
    return touched


def newest_fixes(
    conn: psycopg.Connection[Any], vehicle_ids: Collection[str] | None = None
) -> dict[str, tuple[float, int | None]]:
    """Each vehicle's newest stored fix (epoch seconds, seq): every vehicle's, or some."""
    rows = rows_of_vehicles(conn, _NEWEST_FIXES, _NEWEST_VEHICLE_FIXES, vehicle_ids)
    return {vid: (float(ts), seq) for vid, ts, seq in rows}


def state_revisions(
    conn: psycopg.Connection[Any], vehicle_ids: Collection[str] | None = None
) -> dict[str, int]:
    """Each vehicle state's revision (`vehicle_state.rev`): every vehicle's, or some."""
    rows = rows_of_vehicles(conn, _STATE_REVISIONS, _VEHICLE_STATE_REVISIONS, vehicle_ids)
    return dict(rows)


def state_marks(
    conn: psycopg.Connection[Any], vehicle_ids: Collection[str]
) -> dict[str, StateMark]:
    """Where these vehicles' states stand (those that have one)."""
    with conn.cursor(row_factory=class_row(StateMark)) as cur:
        marks = cur.execute(_STATE_MARKS, {"vehicle_ids": list(vehicle_ids)}).fetchall()
    return {mark.vehicle_id: mark for mark in marks}


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
