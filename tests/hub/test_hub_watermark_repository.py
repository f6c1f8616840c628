"""Storage watermarks in a real, migrated database: round trips, locks, the sweep's query."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from hub_testing import seed_vehicles

from hub.watermark_repository import due_watermarks, load_watermarks, save_watermarks
from hub.watermarks import VehicleHandled, WatermarkPolicy, WatermarkState, advance, published
from protocol.stored import FixRef

if TYPE_CHECKING:
    from collections.abc import Iterator

T0 = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def cars(migrated_database_url: str, mqtt_topic_root: str) -> list[str]:
    vehicles = [f"{mqtt_topic_root}-{n}" for n in range(3)]
    seed_vehicles(migrated_database_url, vehicles)
    return vehicles


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as connection:
        yield connection


def full_state(**changes: Any) -> WatermarkState:
    state = WatermarkState(
        queue_id=2**31 - 1,
        next_seq=1234,
        handled=((1300, 1310), (1400, 1400), (2**63 - 2, 2**63 - 1)),
        top_ts=1_750_000_000_000,
        retired=(5, 6),
        messages_since=7,
        published_next=1200,
        published_at=T0 - timedelta(seconds=30),
        advanced_at=T0 - timedelta(seconds=10),
        due_at=T0 + timedelta(seconds=570),
    )
    return replace(state, **changes)


def test_a_state_round_trips(conn: psycopg.Connection[Any], cars: list[str]) -> None:
    states = {cars[0]: full_state(), cars[1]: WatermarkState(queue_id=1)}
    with conn.transaction():
        save_watermarks(conn, states)
    with conn.transaction():
        assert load_watermarks(conn, [*cars, "not-a-car"]) == states


def test_a_save_moves_the_rows_on_and_may_run_twice_in_a_transaction(
    conn: psycopg.Connection[Any], cars: list[str]
) -> None:
    car = cars[0]
    with conn.transaction():
        save_watermarks(conn, {car: WatermarkState(queue_id=9, next_seq=3)})
        save_watermarks(conn, {car: WatermarkState(queue_id=9, next_seq=4)})
    with conn.transaction():
        save_watermarks(conn, {car: full_state(queue_id=10)})
    with conn.transaction():
        assert load_watermarks(conn, [car]) == {car: full_state(queue_id=10)}


def test_vehicles_outside_the_inventory_get_no_row(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        save_watermarks(conn, {"ghost-car": full_state()})
    with conn.transaction():
        assert load_watermarks(conn, ["ghost-car"]) == {}


def test_a_batch_moves_a_stored_state_on(conn: psycopg.Connection[Any], cars: list[str]) -> None:
    """What the batch's step does: load, advance, save, in one transaction."""
    car = cars[1]
    policy = WatermarkPolicy()
    for seq in range(40):
        with conn.transaction():
            stored = load_watermarks(conn, [car]).get(car)
            handled = VehicleHandled([FixRef(42, seq, 1_750_000_000_000 + seq, None)], 1, 0)
            result = advance(stored, handled, T0 + timedelta(seconds=seq), policy)
            assert result is not None
            save_watermarks(conn, {car: result.state})
    with conn.transaction():
        state = load_watermarks(conn, [car])[car]
    assert (state.queue_id, state.next_seq, state.handled) == (42, 40, ())
    assert state.top_ts == 1_750_000_000_039
    # Published for the new queue at seq 0, then at 16 and 32 more messages.
    assert state.published_next == 33
    assert state.messages_since == 7


def test_the_sweep_takes_due_rows_oldest_first_and_skips_those_a_batch_holds(
    conn: psycopg.Connection[Any], migrated_database_url: str, cars: list[str]
) -> None:
    late, early, later = cars
    with conn.transaction():
        save_watermarks(
            conn,
            {
                late: full_state(due_at=T0 - timedelta(seconds=5)),
                early: full_state(due_at=T0 - timedelta(seconds=60)),
                later: full_state(due_at=T0 + timedelta(seconds=60)),
            },
        )
    with conn.transaction():
        assert list(due_watermarks(conn, T0, limit=10)) == [early, late]
        assert list(due_watermarks(conn, T0, limit=1)) == [early]
    with psycopg.connect(migrated_database_url, autocommit=True) as batch, batch.transaction():
        load_watermarks(batch, [early])  # a batch is moving this vehicle on
        with conn.transaction():
            assert list(due_watermarks(conn, T0, limit=10)) == [late]


def test_two_batches_take_turns_on_a_vehicle(
    conn: psycopg.Connection[Any], migrated_database_url: str, cars: list[str]
) -> None:
    car = cars[2]
    with conn.transaction():
        save_watermarks(conn, {car: full_state()})
    with psycopg.connect(migrated_database_url, autocommit=True) as other, other.transaction():
        load_watermarks(other, [car])
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                load_watermarks(conn, [car])


def test_the_sweep_publishes_and_saves(conn: psycopg.Connection[Any], cars: list[str]) -> None:
    car = cars[0]
    with conn.transaction():
        save_watermarks(conn, {car: full_state(due_at=T0 - timedelta(seconds=1))})
    with conn.transaction():
        due = due_watermarks(conn, T0, limit=100)
        save_watermarks(conn, {vid: published(state, T0) for vid, state in due.items()})
    with conn.transaction():
        state = load_watermarks(conn, [car])[car]
        assert (state.published_next, state.published_at, state.due_at) == (1234, T0, None)
        assert due_watermarks(conn, T0, limit=100) == {}


def test_the_database_bounds_what_a_vehicle_may_keep(
    conn: psycopg.Connection[Any], cars: list[str]
) -> None:
    too_many = tuple((seq, seq) for seq in range(2, 2 * 130, 2))
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        save_watermarks(conn, {cars[0]: full_state(next_seq=0, handled=too_many)})
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        save_watermarks(conn, {cars[0]: full_state(queue_id=2**31)})


def test_a_deleted_vehicles_row_goes_with_it(
    conn: psycopg.Connection[Any], cars: list[str]
) -> None:
    car = cars[1]
    with conn.transaction():
        save_watermarks(conn, {car: full_state()})
    conn.execute("DELETE FROM vehicle_state WHERE vehicle_id = %s", (car,))
    conn.execute("DELETE FROM vehicles WHERE id = %s", (car,))
    with conn.transaction():
        assert load_watermarks(conn, [car]) == {}
