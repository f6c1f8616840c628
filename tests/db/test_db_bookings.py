"""Bookings, maintenance windows and ratings in the database, on both schema paths.

The exclusion path (btree_gist) and the trigger path (row lock on the vehicle) are each
migrated into their own database: the trigger path by migrating with
`freecar.btree_gist = off`, as on a server without contrib. Overlaps must be refused by the
database itself, concurrent writers included.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import errors
from support.vehicles import insert_vehicles

from db.migrate import migrate
from devstack.testing import temporary_database

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.stack import DevStack

# The GUCs 0035 and 0037 read: the plain paths on a server that has the extensions.
PLAIN_OPTIONS = "options=-c%20freecar.btree_gist%3Doff%20-c%20freecar.earthdistance%3Doff"
T0 = datetime(2031, 3, 1, 8, 0, tzinfo=UTC)


def with_options(url: str, options: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{options}"


@pytest.fixture(scope="module", params=["exclusion", "trigger"])
def schema(devstack: DevStack, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(path, url): a database migrated onto the exclusion-constraint or the trigger path."""
    path: str = request.param
    with temporary_database(devstack, f"bookings_{path}") as url:
        migrate(url if path == "exclusion" else with_options(url, PLAIN_OPTIONS))
        with psycopg.connect(url) as conn:
            kind = conn.execute(
                "SELECT contype FROM pg_constraint WHERE conname = 'bookings_no_overlap'"
            ).fetchone()
        if path == "exclusion" and kind is None:
            pytest.skip("this PostgreSQL has no btree_gist: only the trigger path exists here")
        assert (kind is not None) == (path == "exclusion")
        yield path, url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def conn(schema: tuple[str, str]) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(schema[1], autocommit=True) as connection:
        yield connection


def add_vehicle(conn: psycopg.Connection[Any]) -> str:
    (vehicle_id,) = insert_vehicles(conn, [f"v{uuid.uuid4().hex[:12]}"])
    return vehicle_id


def add_user(conn: psycopg.Connection[Any]) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO users (wechat_openid) VALUES (%s) RETURNING id", (f"t:{uuid.uuid4()}",)
    ).fetchone()
    assert row is not None
    user_id: uuid.UUID = row[0]
    return user_id


def book(
    conn: psycopg.Connection[Any],
    vehicle_id: str,
    user_id: uuid.UUID,
    starts: datetime,
    ends: datetime,
    *,
    status: str = "confirmed",
) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO bookings (vehicle_id, user_id, period, status)"
        " VALUES (%s, %s, tstzrange(%s, %s, '[)'), %s) RETURNING id",
        (vehicle_id, user_id, starts, ends, status),
    ).fetchone()
    assert row is not None
    booking_id: uuid.UUID = row[0]
    return booking_id


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def test_overlapping_bookings_are_refused(conn: psycopg.Connection[Any]) -> None:
    vehicle, user = add_vehicle(conn), add_user(conn)
    book(conn, vehicle, user, T0, T0 + hours(2))
    with pytest.raises(errors.ExclusionViolation) as raised:
        book(conn, vehicle, user, T0 + hours(1), T0 + hours(3))
    assert raised.value.diag.constraint_name == "bookings_no_overlap"
    with pytest.raises(errors.ExclusionViolation):
        book(conn, vehicle, user, T0 - hours(1), T0 + hours(5))  # encloses it


def test_touching_bookings_and_other_vehicles_are_fine(conn: psycopg.Connection[Any]) -> None:
    vehicle, other, user = add_vehicle(conn), add_vehicle(conn), add_user(conn)
    book(conn, vehicle, user, T0, T0 + hours(2))
    book(conn, vehicle, user, T0 + hours(2), T0 + hours(3))  # [from, to): they only touch
    book(conn, vehicle, user, T0 - hours(1), T0)
    book(conn, other, user, T0, T0 + hours(2))


def test_cancelled_bookings_do_not_block(conn: psycopg.Connection[Any]) -> None:
    vehicle, user = add_vehicle(conn), add_user(conn)
    first = book(conn, vehicle, user, T0, T0 + hours(2))
    book(conn, vehicle, user, T0, T0 + hours(2), status="cancelled")
    conn.execute("UPDATE bookings SET status = 'cancelled' WHERE id = %s", (first,))
    second = book(conn, vehicle, user, T0 + hours(1), T0 + hours(2))
    # Reviving the cancelled booking would overlap the new one.
    with pytest.raises(errors.ExclusionViolation):
        conn.execute("UPDATE bookings SET status = 'confirmed' WHERE id = %s", (first,))
    # Moving a booking onto another is refused the same way.
    third = book(conn, vehicle, user, T0 + hours(5), T0 + hours(6))
    with pytest.raises(errors.ExclusionViolation):
        conn.execute(
            "UPDATE bookings SET period = tstzrange(%s, %s, '[)') WHERE id = %s",
            (T0 + hours(1), T0 + hours(6), third),
        )
    assert second


def test_completed_bookings_still_hold_their_time(conn: psycopg.Connection[Any]) -> None:
    vehicle, user = add_vehicle(conn), add_user(conn)
    book(conn, vehicle, user, T0, T0 + hours(1), status="completed")
    with pytest.raises(errors.ExclusionViolation):
        book(conn, vehicle, user, T0, T0 + hours(1))


def test_periods_must_be_closed_open_and_bounded(conn: psycopg.Connection[Any]) -> None:
    vehicle, user = add_vehicle(conn), add_user(conn)
    for bounds in ("[]", "(]", "()"):
        with pytest.raises(errors.CheckViolation):
            conn.execute(
                "INSERT INTO bookings (vehicle_id, user_id, period)"
                " VALUES (%s, %s, tstzrange(%s, %s, %s))",
                (vehicle, user, T0, T0 + hours(1), bounds),
            )
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            "INSERT INTO bookings (vehicle_id, user_id, period)"
            " VALUES (%s, %s, tstzrange(%s, NULL))",
            (vehicle, user, T0),
        )
    with pytest.raises(errors.CheckViolation):
        book(conn, vehicle, user, T0, T0 + hours(1), status="lost")


async def _wait_until_blocked(watcher: psycopg.AsyncConnection[Any], pid: int) -> None:
    """Until the backend `pid` waits for a lock (bounded: fails after 10 s)."""
    async with asyncio.timeout(10):
        while True:
            cur = await watcher.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            )
            row = await cur.fetchone()
            if row is not None and row[0] == "Lock":
                return
            await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_concurrent_overlapping_bookings_one_wins(
    schema: tuple[str, str], conn: psycopg.Connection[Any]
) -> None:
    """Two transactions book overlapping times at once: the second waits, then is refused."""
    vehicle, user = add_vehicle(conn), add_user(conn)
    url = schema[1]
    async with (
        await psycopg.AsyncConnection.connect(url) as first,
        await psycopg.AsyncConnection.connect(url) as second,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as watcher,
    ):
        insert = (
            "INSERT INTO bookings (vehicle_id, user_id, period)"
            " VALUES (%s, %s, tstzrange(%s, %s, '[)'))"
        )
        await first.execute(insert, (vehicle, user, T0, T0 + hours(2)))
        racing = asyncio.ensure_future(
            second.execute(insert, (vehicle, user, T0 + hours(1), T0 + hours(3)))
        )
        await _wait_until_blocked(watcher, second.info.backend_pid)
        assert not racing.done()
        await first.commit()
        with pytest.raises(errors.ExclusionViolation):
            await racing
        await second.rollback()
    count = conn.execute("SELECT count(*) FROM bookings WHERE vehicle_id = %s", (vehicle,))
    assert count.fetchone() == (1,)


def test_maintenance_windows_cannot_overlap(conn: psycopg.Connection[Any]) -> None:
    vehicle = add_vehicle(conn)
    insert = (
        "INSERT INTO maintenance_windows (vehicle_id, period, reason)"
        " VALUES (%s, tstzrange(%s, %s, '[)'), 'service')"
    )
    conn.execute(insert, (vehicle, T0, T0 + hours(4)))
    conn.execute(insert, (vehicle, T0 + hours(4), T0 + hours(5)))
    with pytest.raises(errors.ExclusionViolation) as raised:
        conn.execute(insert, (vehicle, T0 + hours(3), T0 + hours(6)))
    assert raised.value.diag.constraint_name == "maintenance_windows_no_overlap"
    conn.execute(insert, (add_vehicle(conn), T0, T0 + hours(4)))


def test_trigger_path_refuses_repeatable_read(
    schema: tuple[str, str], conn: psycopg.Connection[Any]
) -> None:
    """The row lock protects READ COMMITTED only; REPEATABLE READ is refused, not risked."""
    vehicle, user = add_vehicle(conn), add_user(conn)
    with psycopg.connect(schema[1]) as rr:
        rr.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if schema[0] == "trigger":
            with pytest.raises(errors.FeatureNotSupported):
                book(rr, vehicle, user, T0, T0 + hours(1))
        else:
            book(rr, vehicle, user, T0, T0 + hours(1))  # the constraint holds at any level


def test_rating_totals_follow_the_ratings(conn: psycopg.Connection[Any]) -> None:
    vehicle, user = add_vehicle(conn), add_user(conn)
    booking = book(conn, vehicle, user, T0, T0 + hours(1), status="completed")
    insert = "INSERT INTO vehicle_ratings (vehicle_id, user_id, booking_id, stars) VALUES (%s, %s, %s, %s) RETURNING id"  # noqa: E501
    conn.execute(insert, (vehicle, user, booking, 5))
    with pytest.raises(errors.UniqueViolation):
        conn.execute(insert, (vehicle, user, booking, 4))  # one rating per booking
    for stars in (0, 6):
        with pytest.raises(errors.CheckViolation):
            conn.execute(insert, (vehicle, user, None, stars))
    row = conn.execute(insert, (vehicle, user, None, 2)).fetchone()
    assert row is not None
    totals = "SELECT ratings, stars_sum FROM vehicle_rating_totals WHERE vehicle_id = %s"
    assert conn.execute(totals, (vehicle,)).fetchone() == (2, 7)
    conn.execute("UPDATE vehicle_ratings SET stars = 4 WHERE id = %s", (row[0],))
    assert conn.execute(totals, (vehicle,)).fetchone() == (2, 9)
    conn.execute("DELETE FROM vehicle_ratings WHERE id = %s", (row[0],))
    assert conn.execute(totals, (vehicle,)).fetchone() == (1, 5)


def test_search_prefilter_uses_the_position_index(conn: psycopg.Connection[Any]) -> None:
    """geo_near is inlined, so its conditions reach vehicle_state_position.

    Every server takes the btree path since 0045: the earthdistance GiST index made the
    hub's state upserts five times slower.
    """
    assert conn.execute("SELECT geo_search_path()").fetchone() == ("btree",)
    with conn.transaction():
        # The table is tiny here; forbid the sequential scan to see which index is chosen.
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT vehicle_id FROM vehicle_state"
            " WHERE geo_near(lat, lon, %s::float8, %s::float8, %s::float8)",
            (31.23, 121.47, 2000.0),
        ).fetchall()
    assert "vehicle_state_position" in "\n".join(line for (line,) in plan)


def test_availability_probes_use_the_btree(conn: psycopg.Connection[Any]) -> None:
    """Per-vehicle lookups go to bookings_vehicle_end, not the slower exclusion GiST."""
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT 1 FROM bookings WHERE vehicle_id = %s AND status <> 'cancelled'"
            " AND upper(period) > %s AND lower(period) < %s",
            ("v1", T0, T0 + hours(1)),
        ).fetchall()
    assert "bookings_vehicle_end" in "\n".join(line for (line,) in plan)


def test_embedded_postgresql_takes_the_plain_paths(embedded_stack: DevStack) -> None:
    """pgserver ships no contrib: 0035 and 0037 take the trigger and btree paths on their own."""
    with temporary_database(embedded_stack, "bookings_embedded") as url:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT geo_search_path()").fetchone() == ("btree",)
            vehicle, user = add_vehicle(conn), add_user(conn)
            book(conn, vehicle, user, T0, T0 + hours(2))
            with pytest.raises(errors.ExclusionViolation):
                book(conn, vehicle, user, T0 + hours(1), T0 + hours(3))
