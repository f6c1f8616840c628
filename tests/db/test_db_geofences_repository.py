"""The geofence repository against a real PostgreSQL: definitions, NOTIFY, per-vehicle state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from support.vehicles import insert_vehicles

from db.geofences import (
    GEOFENCES_CHANNEL,
    LISTEN_GEOFENCES,
    GeofenceKind,
    GeofenceSpec,
    GeofenceState,
    delete_geofence,
    get_geofence,
    insert_geofence,
    list_geofences,
    load_active_geofences,
    load_geofence_states,
    load_last_positions,
    save_geofence_states,
    update_geofence,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pydantic import ValidationError

LON, LAT = 121.4737, 31.2304
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def square(side: float = 0.002) -> dict[str, Any]:
    ring = [[LON, LAT], [LON + side, LAT], [LON + side, LAT + side], [LON, LAT + side], [LON, LAT]]
    return {"type": "Polygon", "coordinates": [ring]}


def spec(name: str = "lot", **fields: Any) -> GeofenceSpec:
    return GeofenceSpec.model_validate(
        {"name": name, "kind": "parking_zone", "geometry": square(), **fields}
    )


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url) as connection:
        # Each test starts from empty tables (the module shares one database).
        connection.execute("TRUNCATE geofences, vehicles CASCADE")
        connection.commit()
        yield connection


def add_vehicle(conn: psycopg.Connection[Any], vehicle_id: str) -> None:
    insert_vehicles(conn, [vehicle_id], plate=f"沪A·{vehicle_id}", model="Dolphin")


def state(vehicle: str, fence: int, second: int, *, inside: bool = True) -> GeofenceState:
    ts = T0 + timedelta(seconds=second)
    return GeofenceState(vehicle, fence, inside, ts, None, ts, LAT, LON)


def test_create_read_update_delete(conn: psycopg.Connection[Any]) -> None:
    schedule = {"days": [1, 2], "from": "22:00", "to": "06:00", "tz": "Asia/Shanghai"}
    created = insert_geofence(conn, spec(schedule=schedule, speed_limit_kmh=20, dwell_s=30))
    assert created.id > 0
    assert created.created_at is not None
    assert created.schedule is not None
    assert created.schedule.to_json() == schedule
    assert get_geofence(conn, created.id) == created

    changed = created.spec().model_copy(update={"name": "bigger lot"})
    updated = update_geofence(conn, created.id, GeofenceSpec.model_validate(changed.model_dump()))
    assert updated is not None
    assert updated.name == "bigger lot"
    assert updated.updated_at is not None
    assert updated.created_at is not None
    assert updated.updated_at >= updated.created_at
    assert update_geofence(conn, created.id + 1000, spec()) is None

    assert delete_geofence(conn, created.id)
    assert not delete_geofence(conn, created.id)
    assert get_geofence(conn, created.id) is None


def test_circles_and_corridors_are_stored_with_their_size(conn: psycopg.Connection[Any]) -> None:
    circle = insert_geofence(
        conn,
        GeofenceSpec(
            name="dot", kind=GeofenceKind.PARKING_ZONE,
            geometry={"type": "Point", "coordinates": [LON, LAT]}, radius_m=150,
        ),
    )  # fmt: skip
    road = insert_geofence(
        conn,
        GeofenceSpec(
            name="road", kind=GeofenceKind.RESTRICTED,
            geometry={"type": "LineString", "coordinates": [[LON, LAT], [LON + 0.01, LAT]]},
            width_m=30,
        ),
    )  # fmt: skip
    assert get_geofence(conn, circle.id) == circle
    assert circle.radius_m == 150
    assert road.width_m == 30


def test_list_pages_and_filters(conn: psycopg.Connection[Any]) -> None:
    made = [insert_geofence(conn, spec(f"lot {n}", active=n % 3 != 0)) for n in range(7)]
    made.append(insert_geofence(conn, spec("no go", kind="restricted")))
    first = list_geofences(conn, limit=3)
    second = list_geofences(conn, after_id=first[-1].id, limit=3)
    assert [g.id for g in first + second] == [g.id for g in made[:6]]
    assert [g.name for g in list_geofences(conn, kind=GeofenceKind.RESTRICTED)] == ["no go"]
    assert len(list_geofences(conn, active=False)) == 3
    assert len(list_geofences(conn, active=True, kind=GeofenceKind.PARKING_ZONE)) == 4


def test_load_active_skips_inactive_and_invalid_rows(conn: psycopg.Connection[Any]) -> None:
    good = insert_geofence(conn, spec("good"))
    insert_geofence(conn, spec("off", active=False))
    # Written by hand, past the API: an open ring.
    ring = square()["coordinates"][0][:-1]
    bad_id = conn.execute(
        "INSERT INTO geofences (name, kind, geometry) VALUES ('bad', 'restricted', %s)"
        " RETURNING id",
        (Jsonb({"type": "Polygon", "coordinates": [ring]}),),
    ).fetchone()
    assert bad_id is not None
    refused: list[tuple[int, ValidationError]] = []
    loaded = load_active_geofences(conn, on_invalid=lambda i, e: refused.append((i, e)))
    assert [g.id for g in loaded] == [good.id]
    assert [i for i, _ in refused] == [bad_id[0]]
    assert refused[0][1].errors()[0]["type"] == "ring_not_closed"


def test_every_change_notifies_the_hubs_on_commit(
    conn: psycopg.Connection[Any], migrated_database_url: str
) -> None:
    with psycopg.connect(migrated_database_url, autocommit=True) as listener:
        listener.execute(LISTEN_GEOFENCES)
        fence = insert_geofence(conn, spec())
        # Nothing before the commit...
        assert list(listener.notifies(timeout=0.2)) == []
        conn.commit()
        (heard,) = list(listener.notifies(timeout=5, stop_after=1))
        assert (heard.channel, heard.payload) == (GEOFENCES_CHANNEL, "INSERT")
        # ...and an operator's hand edit counts too.
        conn.execute("UPDATE geofences SET name = 'renamed' WHERE id = %s", (fence.id,))
        conn.commit()
        (heard,) = list(listener.notifies(timeout=5, stop_after=1))
        assert heard.payload == "UPDATE"
        delete_geofence(conn, fence.id)
        conn.commit()
        (heard,) = list(listener.notifies(timeout=5, stop_after=1))
        assert heard.payload == "DELETE"


def test_states_save_forward_only_and_load(conn: psycopg.Connection[Any]) -> None:
    add_vehicle(conn, "car-1")
    fence = insert_geofence(conn, spec()).id
    assert save_geofence_states(conn, [state("car-1", fence, 10)]) == 1
    # An older state (a batch saved late, or by another hub) does not go back in time.
    assert save_geofence_states(conn, [state("car-1", fence, 5, inside=False)]) == 0
    assert load_geofence_states(conn) == [state("car-1", fence, 10)]
    # Newer wins; two states for one key in a call: the newest.
    newer = [state("car-1", fence, 30, inside=False), state("car-1", fence, 20)]
    assert save_geofence_states(conn, newer) == 1
    assert load_geofence_states(conn, ["car-1"]) == [state("car-1", fence, 30, inside=False)]
    assert load_geofence_states(conn, ["car-2"]) == []
    assert save_geofence_states(conn, []) == 0


def test_states_of_unknown_vehicles_or_fences_are_skipped(conn: psycopg.Connection[Any]) -> None:
    add_vehicle(conn, "car-1")
    fence = insert_geofence(conn, spec()).id
    off = insert_geofence(conn, spec("off", active=False)).id
    written = save_geofence_states(
        conn,
        [
            state("car-1", fence, 1),
            state("ghost", fence, 1),
            state("car-1", fence + 1000, 1),
            state("car-1", off, 1),
        ],
    )
    assert written == 1
    assert [s.geofence_id for s in load_geofence_states(conn)] == [fence]


def test_deactivating_or_deleting_a_fence_forgets_its_states(
    conn: psycopg.Connection[Any],
) -> None:
    add_vehicle(conn, "car-1")
    first = insert_geofence(conn, spec("first"))
    second = insert_geofence(conn, spec("second"))
    save_geofence_states(conn, [state("car-1", first.id, 1), state("car-1", second.id, 1)])
    update_geofence(conn, first.id, first.spec().model_copy(update={"active": False}))
    assert [s.geofence_id for s in load_geofence_states(conn)] == [second.id]
    delete_geofence(conn, second.id)
    assert load_geofence_states(conn) == []
    conn.execute("DELETE FROM vehicles")


def test_last_positions_come_from_vehicle_state(conn: psycopg.Connection[Any]) -> None:
    add_vehicle(conn, "car-1")
    add_vehicle(conn, "car-2")
    conn.execute(
        "INSERT INTO vehicle_state (vehicle_id, ts, seq, lat, lon, locked, doors_open,"
        " engine_on, last_seen_at) VALUES ('car-1', %s, 1, %s, %s, false, false, true, %s),"
        " ('car-2', %s, 1, NULL, NULL, true, false, false, %s)",
        (T0, LAT, LON, T0, T0, T0),
    )
    (position,) = load_last_positions(conn)
    assert (position.vehicle_id, position.ts, position.lat, position.lon) == ("car-1", T0, LAT, LON)
