"""Telemetry storage: the hub's batch write path against bare COPY on the same server."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg

from bench.report import Report, Result
from db.telemetry import COPY_TYPES, TelemetryRow, insert_telemetry

if TYPE_CHECKING:
    from collections.abc import Iterator

# The hub flushes a few thousand fixes at a time; 5,000 is where COPY's per-batch overhead
# stops mattering and a batch still commits well inside a second.
BATCH = 5_000
VEHICLES = 1_000


def make_rows(count: int, start: datetime) -> list[TelemetryRow]:
    """`count` fixes spread over VEHICLES cars, one second apart per car."""
    return [
        TelemetryRow(
            vehicle_id=f"car-{i % VEHICLES:05d}",
            ts=start + timedelta(seconds=i // VEHICLES),
            seq=i // VEHICLES,
            lat=31.2 + (i % 97) * 1e-4,
            lon=121.4 + (i % 89) * 1e-4,
            speed_kmh=float(i % 60),
            heading=float(i % 360),
            odometer_km=1000.0 + i * 1e-3,
            fuel_pct=60.0,
            battery_pct=None,
            locked=False,
            doors_open=False,
            engine_on=True,
            alarm=None,
            accuracy_m=4.0,
            extra=None,
        )
        for i in range(count)
    ]


def _batches(rows: list[TelemetryRow]) -> Iterator[list[TelemetryRow]]:
    for first in range(0, len(rows), BATCH):
        yield rows[first : first + BATCH]


def _bare_copy(conn: psycopg.Connection[tuple[object, ...]], rows: list[TelemetryRow]) -> float:
    conn.execute("DROP TABLE IF EXISTS bench_copy_ceiling")
    conn.execute("CREATE TABLE bench_copy_ceiling (LIKE telemetry INCLUDING DEFAULTS)")
    conn.commit()
    started = time.perf_counter()
    for batch in _batches(rows):
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY bench_copy_ceiling (vehicle_id, ts, seq, lat, lon, speed_kmh, heading,"
                " odometer_km, fuel_pct, battery_pct, locked, doors_open, engine_on, alarm,"
                " accuracy_m, extra) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(COPY_TYPES)
            for row in batch:
                copy.write_row(row)
        conn.commit()
    return len(rows) / (time.perf_counter() - started)


def _hub_path(conn: psycopg.Connection[tuple[object, ...]], rows: list[TelemetryRow]) -> float:
    started = time.perf_counter()
    for batch in _batches(rows):
        insert_telemetry(conn, batch)
        conn.commit()
    return len(rows) / (time.perf_counter() - started)


def _executemany(conn: psycopg.Connection[tuple[object, ...]], rows: list[TelemetryRow]) -> float:
    started = time.perf_counter()
    for batch in _batches(rows):
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO telemetry (vehicle_id, ts, seq, lat, lon, speed_kmh, heading,"
                " odometer_km, fuel_pct, battery_pct, locked, doors_open, engine_on, alarm,"
                " accuracy_m, extra) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s) ON CONFLICT (vehicle_id, ts) DO NOTHING",
                batch,
            )
        conn.commit()
    return len(rows) / (time.perf_counter() - started)


def run(report: Report, database_url: str, flavour: str, rows_per_case: int) -> None:
    """Measure the write paths on one migrated database ('plain' or 'hypertable')."""
    suite = f"storage ({flavour})"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    fresh = make_rows(rows_per_case, start)
    with psycopg.connect(database_url) as conn:
        ceiling = _bare_copy(conn, fresh)
        report.add(Result(suite, "bare binary COPY, no index (ceiling)", ceiling, "rows/s"))
        hub = _hub_path(conn, fresh)
        report.add(
            Result(
                suite,
                "hub path: COPY + INSERT ON CONFLICT, new rows",
                hub,
                "rows/s",
                note=f"batches of {BATCH:,}",
                baseline="bare binary COPY, no index (ceiling)",
            )
        )
        replay = _hub_path(conn, fresh)
        report.add(
            Result(
                suite,
                "hub path, every row a replay (QoS 1 redelivery)",
                replay,
                "rows/s",
                baseline="bare binary COPY, no index (ceiling)",
            )
        )
        # executemany is far slower; a fifth of the rows is enough to see the ratio.
        later = make_rows(rows_per_case // 5, start + timedelta(days=1))
        many = _executemany(conn, later)
        report.add(
            Result(
                suite,
                "executemany INSERT ON CONFLICT, new rows",
                many,
                "rows/s",
                baseline="bare binary COPY, no index (ceiling)",
            )
        )
        conn.execute("DROP TABLE bench_copy_ceiling")
        conn.commit()
