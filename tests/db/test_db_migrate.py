"""Migrations against a real PostgreSQL: apply, re-apply, refuse, both telemetry shapes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
import pytest

from db.migrate import MigrationError, load_migrations, migrate
from devstack.testing import temporary_database
from freecar.cli import main

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.stack import DevStack


@pytest.fixture
def empty_url(devstack: DevStack, request: pytest.FixtureRequest) -> Iterator[str]:
    with temporary_database(devstack, request.node.name) as url:
        yield url


def _versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def test_applies_every_migration_to_an_empty_database(empty_url: str) -> None:
    status = migrate(empty_url)
    known = [m.version for m in load_migrations()]
    assert list(status.newly_applied) == known
    assert status.pending == ()
    assert _versions(empty_url) == known


def test_running_again_changes_nothing(empty_url: str) -> None:
    migrate(empty_url)
    again = migrate(empty_url)
    assert again.newly_applied == ()
    assert again.version == max(m.version for m in load_migrations())


def test_refuses_a_database_from_newer_code(empty_url: str) -> None:
    migrate(empty_url)
    with psycopg.connect(empty_url) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (9999, 'future', 'x')")
    with pytest.raises(MigrationError, match="9999"):
        migrate(empty_url)


def test_refuses_a_migration_edited_after_it_ran(empty_url: str) -> None:
    migrate(empty_url)
    with psycopg.connect(empty_url) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
    with pytest.raises(MigrationError, match="edited"):
        migrate(empty_url)


def test_two_concurrent_runs_apply_each_migration_once(empty_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(empty_url)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert _versions(empty_url) == [m.version for m in load_migrations()]


def test_cli_check_reports_pending_then_up_to_date(
    empty_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--database-url", empty_url, "--check"]) == 3
    assert main(["migrate", "--database-url", empty_url]) == 0
    assert main(["migrate", "--database-url", empty_url, "--check", "--json"]) == 0
    assert '"pending": []' in capsys.readouterr().out


def test_cli_refusal_exits_1(empty_url: str) -> None:
    migrate(empty_url)
    with psycopg.connect(empty_url) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (9999, 'future', 'x')")
    assert main(["migrate", "--database-url", empty_url]) == 1


def _telemetry_shape(url: str) -> tuple[bool, set[str]]:
    with psycopg.connect(url) as conn:
        hypertable = bool(
            conn.execute(
                "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()[0]  # type: ignore[index]
        ) and bool(
            conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables"
                " WHERE hypertable_name = 'telemetry'"
            ).fetchone()[0]  # type: ignore[index]
        )
        indexes = {
            name
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'telemetry'"
            )
        }
    return hypertable, indexes


def test_telemetry_is_a_hypertable_where_timescaledb_is_preloaded(
    devstack: DevStack, empty_url: str
) -> None:
    status = migrate(empty_url)
    hypertable, indexes = _telemetry_shape(empty_url)
    assert status.timescaledb == devstack.info.timescaledb
    assert hypertable == devstack.info.timescaledb
    assert "telemetry_vehicle_ts" in indexes
    assert ("telemetry_ts_brin" in indexes) == (not hypertable)


def test_plain_telemetry_when_told_not_to_use_timescaledb(empty_url: str) -> None:
    status = migrate(empty_url, use_timescaledb=False)
    hypertable, indexes = _telemetry_shape(empty_url)
    assert not status.timescaledb
    assert not hypertable
    assert {"telemetry_vehicle_ts", "telemetry_ts_brin"} <= indexes


@pytest.mark.parametrize("timescaledb", [True, False], ids=["default", "plain"])
def test_telemetry_key_rejects_a_duplicate_and_shared_queries_run(
    empty_url: str, *, timescaledb: bool
) -> None:
    migrate(empty_url, use_timescaledb=timescaledb)
    ts = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    insert = (
        "INSERT INTO telemetry (vehicle_id, ts, seq, lat, lon, locked, doors_open, engine_on)"
        " VALUES (%s, %s, %s, 31.2, 121.4, true, false, false)"
    )
    with psycopg.connect(empty_url) as conn:
        conn.execute(insert, ("car-1", ts, 1))
        conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, ("car-1", ts, 1))
        conn.rollback()
        skipped = conn.execute(
            insert + " ON CONFLICT (vehicle_id, ts) DO NOTHING", ("car-1", ts, 1)
        )
        assert skipped.rowcount == 0
        conn.execute(insert, ("car-1", ts + timedelta(minutes=7), 2))
        # date_bin, not time_bucket: the same query on both shapes.
        buckets = conn.execute(
            "SELECT date_bin('5 minutes', ts, timestamptz '2000-01-01'), count(*)"
            " FROM telemetry GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert [count for _, count in buckets] == [1, 1]


def test_schema_rejects_a_half_position_and_a_topic_unsafe_vehicle_id(
    migrated_database_url: str,
) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO telemetry (vehicle_id, ts, seq, lat, locked, doors_open, engine_on)"
                " VALUES ('car-1', now(), 1, 31.2, true, false, false)"
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO vehicles (id, plate, make, model, category, fuel_type,"
                " price_hour_minor, price_day_minor, currency)"
                " VALUES ('car/+', 'X', 'BYD', 'Dolphin', 'electric', 'electric', 1, 1, 'CNY')"
            )
