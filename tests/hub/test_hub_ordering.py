"""Which fix of a vehicle is the newer: the pure rule, the same rule in SQL, and a real hub.

A unit's clock may run minutes ahead (the future filter lets five through); its persisted
`seq` cannot be skewed that way, so it orders a vehicle's state first (hub/ordering.py).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
from hub_testing import (
    hub_settings,
    make_fix,
    now_ms,
    query_rows,
    running_hub,
    seed_vehicles,
    wait_until,
)
from hypothesis import given
from hypothesis import strategies as st

from hub.ordering import is_newer
from protocol.status import Status, encode_status
from protocol.telemetry import encode_telemetry
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub_testing import Publisher

    from devstack.stack import DevStack

ALLOWANCE = 300_000  # ms: the default FREECAR_HUB_MAX_FUTURE_S
YEAR_MS = 365 * 86_400_000

seqs = st.integers(0, 2**63 - 1)
stamps = st.integers(1, 253_402_300_799_999)
allowances = st.integers(0, 3_600_000)


@given(seq=seqs, ts=stamps, allowance=allowances)
def test_a_fix_is_not_newer_than_itself(seq: int, ts: int, allowance: int) -> None:
    assert not is_newer(seq, ts, than_seq=seq, than_ts=ts, allowance=allowance)


@given(seq=seqs, ts=stamps, than_ts=stamps, allowance=allowances)
def test_equal_counters_or_none_stored_compare_clocks(
    seq: int, ts: int, than_ts: int, allowance: int
) -> None:
    assert is_newer(seq, ts, than_seq=seq, than_ts=than_ts, allowance=allowance) == (ts > than_ts)
    assert is_newer(seq, ts, than_seq=None, than_ts=than_ts, allowance=allowance) == (ts > than_ts)


@given(seq=seqs, step=st.integers(1, 1000), ts=stamps, than_ts=stamps, allowance=allowances)
def test_a_higher_counter_is_newer_whatever_the_clock_says(
    seq: int, step: int, ts: int, than_ts: int, allowance: int
) -> None:
    assert is_newer(seq + step, ts, than_seq=seq, than_ts=than_ts, allowance=allowance)


@given(
    seq=seqs,
    step=st.integers(1, 1000),
    than_ts=st.integers(1, 10**15),
    later=st.integers(-(10**12), 10**12),
    allowance=allowances,
)
def test_a_lower_counter_is_newer_only_past_the_allowance(
    seq: int, step: int, than_ts: int, later: int, allowance: int
) -> None:
    # Within the allowance it may be a clock running ahead; past it, a counter that restarted.
    newer = is_newer(
        seq, than_ts + later, than_seq=seq + step, than_ts=than_ts, allowance=allowance
    )
    assert newer == (later > allowance)


@given(
    clock_ahead=st.integers(0, ALLOWANCE),
    steps=st.lists(st.integers(1, 60_000), min_size=1, max_size=20),
)
def test_real_fixes_after_a_fast_clock_win(clock_ahead: int, steps: list[int]) -> None:
    # A fix stamped up to the allowance ahead, then fixes with a right clock and higher
    # counters: each of them is newer than whatever the state holds.
    state = (10, 1_750_000_000_000 + clock_ahead)
    ts = 1_750_000_000_000
    for seq, step in enumerate(steps, start=11):
        ts += step
        assert is_newer(seq, ts, than_seq=state[0], than_ts=state[1], allowance=ALLOWANCE)
        state = (seq, ts)


def test_the_sql_rule_is_the_same_rule(migrated_database_url: str) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    seqs_ = [None, 5, 6, 7]
    offsets_ms = [-2 * ALLOWANCE, -ALLOWANCE - 1, -ALLOWANCE, -1, 0, 1, ALLOWANCE, ALLOWANCE + 1]
    cases = [
        (seq, offset, than_seq)
        for seq, offset, than_seq in itertools.product([5, 6, 7], offsets_ms, seqs_)
    ]
    with psycopg.connect(migrated_database_url) as conn:
        for seq, offset, than_seq in cases:
            ts = base + timedelta(milliseconds=offset)
            (in_sql,) = conn.execute(
                "SELECT vehicle_fix_is_newer(%s, %s, %s, %s, %s)",
                (seq, ts, than_seq, base, timedelta(milliseconds=ALLOWANCE)),
            ).fetchone() or (None,)
            expected = is_newer(seq, offset, than_seq=than_seq, than_ts=0, allowance=ALLOWANCE)
            assert in_sql is expected, (seq, offset, than_seq)


def _state(url: str, car: str) -> tuple[bool, bool, datetime | None]:
    [(locked, online, presence_at)] = query_rows(
        url, "SELECT locked, online, presence_at FROM vehicle_state WHERE vehicle_id = %s", car
    )
    return bool(locked), bool(online), presence_at


def test_a_fix_from_a_fast_clock_does_not_hold_the_state(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    topic = Topic.telemetry(car, root=root).value
    start = now_ms() - 20_000
    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url)
        # Four minutes ahead (inside the five-minute allowance), saying locked...
        pub.publish(topic, encode_telemetry(make_fix(10, start + 240_000, locked=True)))
        pub.flush()
        wait_until(
            lambda: query_rows(url, "SELECT 1 FROM vehicle_state WHERE vehicle_id = %s", car),
            what="the first state",
        )
        # ...then ten fixes with a right clock and the next counters, saying unlocked.
        for seq in range(11, 21):
            pub.publish(topic, encode_telemetry(make_fix(seq, start + seq * 1000, locked=False)))
        pub.flush()
        wait_until(
            lambda: (
                query_rows(url, "SELECT count(*) FROM telemetry WHERE vehicle_id = %s", car)
                == [(11,)]
            ),
            what="every fix stored",
        )
        wait_until(lambda: not _state(url, car)[0], what="the state to show unlocked")
    [(seq,)] = query_rows(url, "SELECT seq FROM vehicle_state WHERE vehicle_id = %s", car)
    assert seq == 20


def test_a_status_from_a_fast_clock_dates_nothing_in_the_future(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    status_topic = Topic.status(car, root=root).value
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(
            Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(1, now_ms() - 1000))
        )
        # Online, dated a year ahead: the hub dates it when it hears it.
        pub.publish(status_topic, encode_status(Status(online=True, ts=now_ms() + YEAR_MS)))
        pub.flush()
        wait_until(lambda: hub.stats.messages_acked >= 2, what="both messages committed")
        _, online, presence_at = _state(url, car)
        assert online
        assert presence_at is not None
        assert presence_at <= datetime.now(UTC)
        # A real offline after it still counts (live: the hub dates it on arrival).
        pub.publish(status_topic, encode_status(Status(online=False, ts=now_ms())))
        pub.flush()
        wait_until(lambda: not _state(url, car)[1], what="the car offline")


def test_a_retained_offline_from_a_fast_clock_does_not_keep_a_live_car_offline(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    status_topic = Topic.status(car, root=root).value
    telemetry_topic = Topic.telemetry(car, root=root).value
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(telemetry_topic, encode_telemetry(make_fix(1, now_ms() - 1000)))
        pub.flush()
        wait_until(lambda: hub.stats.fixes_stored >= 1, what="the car's first state")
        # An offline from a clock a year ahead, retained: the next hub hears it first.
        pub.publish(
            status_topic, encode_status(Status(online=False, ts=now_ms() + YEAR_MS)), retain=True
        )
        pub.flush()
    try:
        with running_hub(settings) as hub:
            pub = publisher(devstack.info.mqtt_url, "again")
            pub.publish(telemetry_topic, encode_telemetry(make_fix(2, now_ms() - 500)))
            pub.flush()
            wait_until(lambda: hub.stats.fixes_stored >= 1, what="the live fix committed")
            _, online, presence_at = _state(url, car)
            assert online
            assert presence_at is not None
            assert presence_at <= datetime.now(UTC)
    finally:
        clear = publisher(devstack.info.mqtt_url, "clear")
        clear.publish(status_topic, b"", retain=True)
        clear.flush()
