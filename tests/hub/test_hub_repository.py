"""The hub's SQL against a real, migrated database: state only moves forward."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hub_testing import seed_vehicles

from db.telemetry import TelemetryRow
from hub.batch import Batch, CommandAck, DeadLetter
from hub.repository import commands, telemetry, vehicle_state

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def row(vehicle: str, second: int, **changes: Any) -> TelemetryRow:
    fields: dict[str, Any] = {
        "vehicle_id": vehicle,
        "ts": T0 + timedelta(seconds=second),
        "seq": second,
        "lat": 31.23,
        "lon": 121.47,
        "speed_kmh": 20.0,
        "heading": 90.0,
        "odometer_km": 100.0 + second,
        "fuel_pct": 50.0,
        "battery_pct": None,
        "locked": False,
        "doors_open": False,
        "engine_on": True,
        "alarm": None,
        "accuracy_m": 5.0,
        "extra": None,
    }
    fields.update(changes)
    return TelemetryRow(**fields)


# The hub's default future bound (FREECAR_HUB_MAX_FUTURE_S), which orders fixes.
ALLOWANCE = timedelta(minutes=5)


def apply(url: str, batch: Batch) -> list[vehicle_state.LiveState]:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        telemetry.store_telemetry(conn, batch.rows)
        telemetry.store_dead_letters(conn, batch.dead_letters)
        states = vehicle_state.advance_states(
            conn, batch.latest, batch.presence, allowance=ALLOWANCE
        )
        commands.record_command_acks(conn, batch.command_acks)
    return states


def batch_of(*rows: TelemetryRow, seen_at: datetime | None = None) -> Batch:
    batch = Batch()
    for item in rows:
        batch.keep_row(item, newest=True)
        at = seen_at or item.ts
        batch.saw(item.vehicle_id, at, online=True, online_at=at)
    return batch


def state(url: str, vehicle: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        found = cur.execute("SELECT * FROM vehicle_state WHERE vehicle_id = %s", (vehicle,))
        result = found.fetchone()
    assert result is not None
    return result


@pytest.fixture
def car(migrated_database_url: str, mqtt_topic_root: str) -> str:
    vehicle = f"{mqtt_topic_root}-car"
    seed_vehicles(migrated_database_url, [vehicle])
    return vehicle


def test_state_moves_only_forward(migrated_database_url: str, car: str) -> None:
    url = migrated_database_url
    apply(url, batch_of(row(car, 10, locked=True, fuel_pct=40.0)))
    assert state(url, car)["ts"] == T0 + timedelta(seconds=10)
    # A backfilled older fix is stored but does not move the state back.
    apply(url, batch_of(row(car, 5, locked=False, lat=30.0, lon=120.0)))
    current = state(url, car)
    assert current["ts"] == T0 + timedelta(seconds=10)
    assert (current["locked"], current["lat"]) == (True, 31.23)
    # A newer one does; a fix without position keeps the last known one, a missing fuel
    # level keeps the last value.
    apply(url, batch_of(row(car, 20, lat=None, lon=None, fuel_pct=None, battery_pct=77.0)))
    current = state(url, car)
    assert current["ts"] == T0 + timedelta(seconds=20)
    assert (current["lat"], current["lon"]) == (31.23, 121.47)
    assert (current["fuel_pct"], current["battery_pct"]) == (40.0, 77.0)
    assert current["locked"] is False
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM telemetry WHERE vehicle_id = %s", (car,))
        assert stored.fetchone() == (3,)


def test_state_only_for_vehicles_in_the_inventory(migrated_database_url: str, car: str) -> None:
    stranger = f"{car}-unknown"
    states = apply(migrated_database_url, batch_of(row(stranger, 1), row(car, 1)))
    assert [s.vehicle_id for s in states] == [car]
    with psycopg.connect(migrated_database_url) as conn:
        found = conn.execute("SELECT count(*) FROM telemetry WHERE vehicle_id = %s", (stranger,))
        # The fix itself is kept: telemetry has no foreign key, the broker's ACL guards it.
        assert found.fetchone() == (1,)


def test_presence_newest_evidence_wins_in_any_order(migrated_database_url: str, car: str) -> None:
    url = migrated_database_url
    apply(url, batch_of(row(car, 1)))
    assert state(url, car)["online"] is True
    went_offline = T0 + timedelta(seconds=30)
    offline = Batch()
    offline.saw(car, went_offline, online=False, online_at=went_offline)
    apply(url, offline)
    current = state(url, car)
    assert (current["online"], current["online_changed_at"]) == (False, went_offline)
    # Older evidence applied later (another hub, a backlog) changes nothing...
    late = Batch()
    late.saw(car, T0 + timedelta(seconds=20), online=True, online_at=T0 + timedelta(seconds=20))
    apply(url, late)
    assert state(url, car)["online"] is False
    assert state(url, car)["last_seen_at"] == went_offline
    # ...newer evidence does.
    back = T0 + timedelta(seconds=40)
    apply(url, batch_of(row(car, 40), seen_at=back))
    current = state(url, car)
    assert (current["online"], current["online_changed_at"]) == (True, back)
    # More evidence of the same keeps the time it changed.
    apply(url, batch_of(row(car, 50), seen_at=back + timedelta(seconds=10)))
    assert state(url, car)["online_changed_at"] == back


def test_silent_vehicles_are_marked_offline(migrated_database_url: str, car: str) -> None:
    url = migrated_database_url
    apply(url, batch_of(row(car, 1), seen_at=datetime.now(UTC) - timedelta(minutes=10)))
    with psycopg.connect(url, autocommit=True) as conn:
        assert car not in vehicle_state.silent_vehicles(conn, 3600)
        assert car in vehicle_state.silent_vehicles(conn, 300)
        # Heard from again between the look and the marking: stays online.
        conn.execute("UPDATE vehicle_state SET last_seen_at = now() WHERE vehicle_id = %s", [car])
        assert vehicle_state.mark_offline(conn, [car], 300) == []
        conn.execute(
            "UPDATE vehicle_state SET last_seen_at = now() - interval '10 minutes'"
            " WHERE vehicle_id = %s",
            [car],
        )
        before = vehicle_state.state_revisions(conn, [car])[car]
        swept = vehicle_state.mark_offline(conn, [car], 300)
    assert [(s.vehicle_id, s.online, s.rev) for s in swept] == [(car, False, before + 1)]
    assert state(url, car)["online"] is False


def test_dead_letters_keep_the_bytes(migrated_database_url: str, mqtt_topic_root: str) -> None:
    batch = Batch()
    letter = DeadLetter.of(f"{mqtt_topic_root}/x", b"\x00\xffraw", "bad_json", "why", T0)
    batch.dead_letters.append(letter)
    apply(migrated_database_url, batch)
    with psycopg.connect(migrated_database_url) as conn:
        found = conn.execute(
            "SELECT payload, reason, detail, received_at, payload_size, payload_sha256"
            " FROM dead_letters WHERE topic = %s",
            (letter.topic,),
        ).fetchone()
    digest = hashlib.sha256(b"\x00\xffraw").digest()
    assert found == (b"\x00\xffraw", "bad_json", "why", T0, 5, digest)


def test_command_acks_move_sent_commands_only(migrated_database_url: str, car: str) -> None:
    url = migrated_database_url
    ids = [uuid.uuid4() for _ in range(3)]
    with psycopg.connect(url) as conn:
        for cmd_id, status in zip(ids, ["sent", "sent", "queued"], strict=True):
            conn.execute(
                "INSERT INTO vehicle_commands (id, vehicle_id, action, status, issued_by,"
                " expires_at) VALUES (%s, %s, 'unlock', %s, 'test', now() + interval '1 min')",
                (cmd_id, car, status),
            )
    batch = Batch()
    at = datetime.now(UTC)
    batch.command_acks += [
        CommandAck(car, ids[0], "done", None, False, at, "t", b"{}"),
        CommandAck(car, ids[1], "rejected", "expired", None, at, "t", b"{}"),
        CommandAck(car, ids[2], "done", None, False, at, "t", b"{}"),
        # Another vehicle cannot ack this vehicle's command.
        CommandAck(f"{car}-other", ids[0], "failed", "x", None, at, "t", b"{}"),
    ]
    apply(url, batch)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, status, outcome_reason, acked_at IS NOT NULL, finished_at IS NOT NULL"
            " FROM vehicle_commands WHERE vehicle_id = %s",
            (car,),
        ).fetchall()
    outcome = {r[0]: r[1:] for r in rows}
    assert outcome[ids[0]] == ("acked", None, True, False)
    assert outcome[ids[1]] == ("rejected", "expired", True, True)
    assert outcome[ids[2]] == ("queued", None, False, False)


def test_load_states_gives_the_filters_their_start(migrated_database_url: str, car: str) -> None:
    apply(migrated_database_url, batch_of(row(car, 3, locked=True, alarm=True)))
    with psycopg.connect(migrated_database_url) as conn:
        loaded = {s.vehicle_id: s for s in vehicle_state.load_states(conn)}
    assert loaded[car].ts == T0 + timedelta(seconds=3)
    assert (loaded[car].locked, loaded[car].alarm, loaded[car].lat) == (True, True, 31.23)
