"""The batch writer: COPY into staging, then exactly-once insert into telemetry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from db.telemetry import TelemetryRow, insert_telemetry

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _row(vehicle: str, second: int, extra: dict[str, object] | None = None) -> TelemetryRow:
    return TelemetryRow(
        vehicle, START + timedelta(seconds=second), second, 31.23, 121.47, 32.5, 90.0,
        1234.5, 55.0, None, False, False, True, None, 4.0, extra,
    )  # fmt: skip


def test_batch_with_replays_and_duplicates_stores_each_fix_once(
    migrated_database_url: str,
) -> None:
    first = [_row("car-1", s) for s in range(100)] + [_row("car-2", s) for s in range(50)]
    with psycopg.connect(migrated_database_url) as conn:
        assert insert_telemetry(conn, first + first[:10]) == 150
        conn.commit()
        # A QoS 1 redelivery of everything plus 20 new fixes: only the new ones count.
        again = first + [_row("car-2", s) for s in range(50, 70)]
        assert insert_telemetry(conn, again) == 20
        conn.commit()
        count = conn.execute("SELECT count(*) FROM telemetry").fetchone()
        assert count == (170,)


def test_two_batches_in_one_transaction_and_a_rollback(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        conn.execute("DELETE FROM telemetry WHERE vehicle_id = 'car-9'")
        assert insert_telemetry(conn, [_row("car-9", 1)]) == 1
        assert insert_telemetry(conn, [_row("car-9", 2)]) == 1
        conn.rollback()
        assert insert_telemetry(conn, [_row("car-9", 3)]) == 1
        conn.commit()
        rows = conn.execute("SELECT seq FROM telemetry WHERE vehicle_id = 'car-9'").fetchall()
        assert rows == [(3,)]


def test_values_and_unknown_fields_round_trip(migrated_database_url: str) -> None:
    row = _row("car-7", 5, extra={"tyre_kpa": [230, 231, 229, 230]})
    with psycopg.connect(migrated_database_url) as conn:
        insert_telemetry(conn, [row])
        conn.commit()
        stored = conn.execute(
            "SELECT vehicle_id, ts, seq, lat, lon, speed_kmh, heading, odometer_km, fuel_pct,"
            " battery_pct, locked, doors_open, engine_on, alarm, accuracy_m, extra"
            " FROM telemetry WHERE vehicle_id = 'car-7'"
        ).fetchone()
    assert stored == tuple(row)
