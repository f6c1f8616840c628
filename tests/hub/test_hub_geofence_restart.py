"""Geofence state survives a hub restart, and fences reload when the database says so."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from geofence_testing import T0, circle, fix

from db.geofences import (
    LISTEN_GEOFENCES,
    GeofenceSpec,
    insert_geofence,
    load_active_geofences,
    load_geofence_states,
    load_last_positions,
    save_geofence_states,
    update_geofence,
)
from hub.geofences import GeofenceEngine, TransitionKind

if TYPE_CHECKING:
    from collections.abc import Iterator

    from geofence_testing import Fix

    from hub.geofences import GeofenceTransition


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url) as connection:
        connection.execute("TRUNCATE geofences, vehicles CASCADE")
        connection.execute(
            "INSERT INTO vehicles (id, plate, make, model, category, fuel_type,"
            " price_hour_minor, price_day_minor, currency)"
            " VALUES ('car-1', '沪A·D00001', 'BYD', 'Dolphin', 'electric', 'electric',"
            " 3000, 18800, 'CNY')"
        )
        connection.commit()
        yield connection


def write_batch(
    conn: psycopg.Connection[Any], engine: GeofenceEngine, fixes: list[Fix]
) -> list[GeofenceTransition]:
    """What the hub's writer does: evaluate, then store the state with the batch."""
    transitions = engine.evaluate(fixes)
    with conn.transaction():
        save_geofence_states(conn, engine.dirty_states())
        last = fixes[-1]
        # vehicle_state, as ingest keeps it: the newest fix.
        conn.execute(
            "INSERT INTO vehicle_state (vehicle_id, ts, seq, lat, lon, locked, doors_open,"
            " engine_on, last_seen_at) VALUES (%s, %s, 0, %s, %s, false, false, true, %s)"
            " ON CONFLICT (vehicle_id) DO UPDATE SET ts = EXCLUDED.ts, lat = EXCLUDED.lat,"
            " lon = EXCLUDED.lon",
            (last.vehicle_id, last.ts, last.lat, last.lon, last.ts),
        )
    return transitions


def start_hub(conn: psycopg.Connection[Any]) -> GeofenceEngine:
    """What a hub does at start: load fences, state and last positions."""
    engine = GeofenceEngine(load_active_geofences(conn))
    engine.load_state(load_geofence_states(conn), load_last_positions(conn))
    conn.commit()
    return engine


def zone(conn: psycopg.Connection[Any], **fields: Any) -> int:
    fence = circle(0, 200, **{"enter_margin_m": 10, "exit_margin_m": 10, **fields})
    data = fence.model_dump(exclude={"id", "created_at", "updated_at"})
    return insert_geofence(conn, GeofenceSpec.model_validate(data)).id


def test_a_restart_mid_stay_raises_no_second_enter(conn: psycopg.Connection[Any]) -> None:
    fence = zone(conn)
    conn.commit()
    hub = start_hub(conn)
    # Drive in and park.
    arrive = [fix(-500 + 50 * k, 0, 5 * k) for k in range(11)]
    got = write_batch(conn, hub, arrive)
    assert [(t.geofence_id, t.kind) for t in got] == [(fence, TransitionKind.ENTER)]

    # The hub restarts; the car is still parked inside.
    restarted = start_hub(conn)
    parked = [fix(3, -2, 60 + 30 * k) for k in range(5)]
    assert write_batch(conn, restarted, parked) == []
    # A redelivered old batch is a replay, not news.
    assert restarted.evaluate(arrive) == []
    # Then it leaves: one exit.
    leave = [fix(50 * k, 0, 300 + 5 * k) for k in range(1, 12)]
    got = write_batch(conn, restarted, leave)
    assert [(t.geofence_id, t.kind) for t in got] == [(fence, TransitionKind.EXIT)]
    (stored,) = load_geofence_states(conn)
    assert stored.inside is False


def test_a_restart_mid_dwell_keeps_the_dwell_clock(conn: psycopg.Connection[Any]) -> None:
    zone(conn, dwell_s=120, enter_margin_m=150)
    conn.commit()
    hub = start_hub(conn)
    assert write_batch(conn, hub, [fix(100, 0, 0), fix(100, 0, 60)]) == []
    restarted = start_hub(conn)
    got = write_batch(conn, restarted, [fix(100, 0, 121)])
    assert [t.kind for t in got] == [TransitionKind.ENTER]
    assert got[0].ts == fix(0, 0, 121).ts


def test_a_restart_between_two_sparse_fixes_still_sees_the_crossing(
    conn: psycopg.Connection[Any],
) -> None:
    zone(conn)
    conn.commit()
    hub = start_hub(conn)
    assert write_batch(conn, hub, [fix(-600, 0, 0)]) == []
    restarted = start_hub(conn)
    got = write_batch(conn, restarted, [fix(600, 0, 120)])
    assert [t.kind for t in got] == [TransitionKind.ENTER, TransitionKind.EXIT]
    assert T0 < got[0].ts < got[1].ts < fix(0, 0, 120).ts


def test_an_edited_fence_reloads_on_notify_and_keeps_its_state(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    fence_id = zone(conn)
    conn.commit()
    with psycopg.connect(migrated_database_url, autocommit=True) as listener:
        listener.execute(LISTEN_GEOFENCES)
        hub = start_hub(conn)
        assert len(write_batch(conn, hub, [fix(0, 0, 0)])) == 1
        # An operator widens the zone; the hub hears of it and reloads.
        stored = load_active_geofences(conn)[0]
        wider = stored.spec().model_copy(update={"radius_m": 400.0})
        update_geofence(conn, fence_id, GeofenceSpec.model_validate(wider.model_dump()))
        conn.commit()
        assert len(list(listener.notifies(timeout=5, stop_after=1))) == 1
        hub.reload(load_active_geofences(conn))
        conn.commit()
        # Still inside (no second enter); 300 m out is inside the wider zone.
        assert write_batch(conn, hub, [fix(0, 0, 10), fix(300, 0, 40)]) == []
        assert [t.kind for t in write_batch(conn, hub, [fix(450, 0, 60)])] == [TransitionKind.EXIT]
