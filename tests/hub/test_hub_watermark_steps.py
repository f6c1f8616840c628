"""The batch's watermark step and the sweep, against a real migrated database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from hub_testing import seed_vehicles

from hub.storage_acks import advance_watermarks, publish_due_watermarks, send_publications
from hub.watermark_repository import load_watermarks
from hub.watermarks import HandledFixes, WatermarkPolicy
from protocol.stored import FixRef, decode_stored

if TYPE_CHECKING:
    from collections.abc import Iterator

    from hub.storage_acks import Publication

T0 = datetime.now(UTC).replace(microsecond=0)
POLICY = WatermarkPolicy()
BORN_MS = 1_750_000_000_000


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def cars(migrated_database_url: str, mqtt_topic_root: str) -> list[str]:
    vehicles = [f"{mqtt_topic_root}-{n}" for n in range(2)]
    seed_vehicles(migrated_database_url, vehicles)
    return vehicles


def handled_of(fixes: dict[str, list[int]], *, queue_id: int = 5) -> HandledFixes:
    """A batch's handled fixes: one message per seq."""
    handled = HandledFixes()
    for vehicle_id, seqs in fixes.items():
        for seq in seqs:
            handled.add_message(
                vehicle_id, [FixRef(queue_id, seq, BORN_MS + seq, None)], backlog=False
            )
    return handled


def step(
    conn: psycopg.Connection[Any], fixes: dict[str, list[int]], at: datetime
) -> list[Publication]:
    with conn.transaction():
        return advance_watermarks(conn, handled_of(fixes), at, POLICY)


def test_a_new_queue_is_answered_and_a_vehicle_outside_the_inventory_is_not(
    conn: psycopg.Connection[Any], cars: list[str]
) -> None:
    publications = step(conn, {cars[0]: [0, 1, 2], "ghost-car": [0]}, T0)
    assert [p.vehicle_id for p in publications] == [cars[0]]
    message = decode_stored(publications[0].payload())
    assert (message.queue_id, message.next_seq) == (5, 3)
    assert publications[0].topic("t1/fleet") == f"t1/fleet/{cars[0]}/stored"
    with conn.transaction():
        assert set(load_watermarks(conn, [cars[0], "ghost-car"])) == {cars[0]}


def test_batches_publish_every_sixteen_messages(
    conn: psycopg.Connection[Any], cars: list[str]
) -> None:
    car = cars[1]
    words: list[int] = []
    for seq in range(40):
        publications = step(conn, {car: [seq]}, T0 + timedelta(seconds=seq))
        words.extend(decode_stored(p.payload()).next_seq for p in publications)
    assert words == [1, 17, 33]


def test_the_sweep_publishes_what_fell_due_between_batches(
    conn: psycopg.Connection[Any], cars: list[str]
) -> None:
    car = cars[0]
    step(conn, {car: [0]}, T0)  # answered at once: a new queue
    assert step(conn, {car: [1, 2]}, T0 + timedelta(seconds=1)) == []
    with conn.transaction():
        assert publish_due_watermarks(conn, T0 + timedelta(seconds=2), limit=100) == []
    later = T0 + timedelta(seconds=1) + POLICY.max_delay
    with conn.transaction():
        due = publish_due_watermarks(conn, later, limit=100)
    assert [(p.vehicle_id, decode_stored(p.payload()).next_seq) for p in due] == [(car, 3)]
    with conn.transaction():
        assert publish_due_watermarks(conn, later, limit=100) == []


def test_publications_go_out_as_given(conn: psycopg.Connection[Any], cars: list[str]) -> None:
    sent: list[tuple[str, bytes]] = []
    publications = step(conn, {cars[1]: [0]}, T0)
    assert send_publications(publications, "fleet", lambda t, p: sent.append((t, p))) == 1
    assert sent == [(f"fleet/{cars[1]}/stored", publications[0].payload())]
