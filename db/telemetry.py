"""Batch writes of telemetry: binary COPY into a staging table, then one deduplicating INSERT.

QoS 1 delivers at least once and agents backfill after an outage, so a batch may repeat
rows already stored. COPY cannot skip conflicts, so rows land in a per-session temporary
table first and move with `INSERT ... ON CONFLICT (vehicle_id, ts) DO NOTHING`: storage is
exactly once whatever the broker redelivers. The caller owns the transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    import psycopg


class TelemetryRow(NamedTuple):
    """One fix as stored: the columns of `telemetry` that ingest fills, in COPY order."""

    vehicle_id: str
    ts: datetime
    seq: int
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
    accuracy_m: float | None
    extra: dict[str, Any] | None


# PostgreSQL types of TelemetryRow's fields, for binary COPY (which must be told them).
COPY_TYPES = (
    "text", "timestamptz", "int8", "float8", "float8", "float4", "float4", "float8",
    "float4", "float4", "bool", "bool", "bool", "bool", "float4", "jsonb",
)  # fmt: skip

_CREATE_STAGING = """
    CREATE TEMPORARY TABLE IF NOT EXISTS telemetry_staging (
        vehicle_id text, ts timestamptz, seq bigint, lat double precision,
        lon double precision, speed_kmh real, heading real, odometer_km double precision,
        fuel_pct real, battery_pct real, locked boolean, doors_open boolean,
        engine_on boolean, alarm boolean, accuracy_m real, extra jsonb
    ) ON COMMIT DELETE ROWS
"""

_COPY_STAGING = """
    COPY telemetry_staging (vehicle_id, ts, seq, lat, lon, speed_kmh, heading, odometer_km,
                            fuel_pct, battery_pct, locked, doors_open, engine_on, alarm,
                            accuracy_m, extra)
    FROM STDIN (FORMAT BINARY)
"""

_MOVE_STAGED = """
    INSERT INTO telemetry (vehicle_id, ts, seq, lat, lon, speed_kmh, heading, odometer_km,
                           fuel_pct, battery_pct, locked, doors_open, engine_on, alarm,
                           accuracy_m, extra)
    SELECT vehicle_id, ts, seq, lat, lon, speed_kmh, heading, odometer_km, fuel_pct,
           battery_pct, locked, doors_open, engine_on, alarm, accuracy_m, extra
    FROM telemetry_staging
    ON CONFLICT (vehicle_id, ts) DO NOTHING
"""


def insert_telemetry(conn: psycopg.Connection[Any], rows: Iterable[TelemetryRow]) -> int:
    """Store a batch of fixes, skipping ones already stored; return how many were new.

    Runs inside the caller's transaction; the staging table empties itself on commit.
    """
    with conn.cursor() as cur:
        cur.execute(_CREATE_STAGING)
        with cur.copy(_COPY_STAGING) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        cur.execute(_MOVE_STAGED)
        inserted = cur.rowcount
        # Emptied here too, not only on commit, so a caller that runs two batches in one
        # transaction does not insert the first one twice.
        cur.execute("DELETE FROM telemetry_staging")
    return inserted
