"""Ingest end to end: a real broker, database and Redis, an in-process hub, real publishers."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import redis
from hub_testing import (
    WAIT_S,
    hub_settings,
    make_fix,
    now_ms,
    running_hub,
    seed_vehicles,
    telemetry_count,
    wait_until,
)

from hub.fanout import LIVE_CHANNEL
from hub.filters import Reason
from protocol.broker_url import BrokerUrl
from protocol.status import last_will_payload, online_payload
from protocol.telemetry import encode_telemetry, encode_telemetry_batch
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub_testing import Publisher

    from devstack.stack import DevStack
    from hub.service import Hub


def state_of(url: str, vehicle: str) -> dict[str, Any] | None:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM vehicle_state WHERE vehicle_id = %s", (vehicle,)
        ).fetchone()


def all_in(hub: Hub, messages: int) -> Callable[[], bool]:
    """True once the hub has received `messages` and committed everything it received."""

    def done() -> bool:
        stats = hub.stats
        # QoS 0 needs no ack: amqtt sends retained messages that way, even other roots' ones.
        handled = stats.messages_acked + stats.acks_skipped + stats.messages_qos0
        return stats.messages_received >= messages and handled >= stats.messages_received

    return done


def test_duplicates_and_replays_give_exactly_the_unique_rows(
    any_stack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    root = mqtt_topic_root
    settings = hub_settings(
        any_stack, database_url=migrated_database_url, redis_url=redis_url, root=root
    )
    cars = [f"{root}-c{i}" for i in range(10)]
    seed_vehicles(migrated_database_url, cars)
    start = now_ms() - 60_000
    fixes = {car: [make_fix(s, start + s * 100) for s in range(30)] for car in cars}
    with running_hub(settings) as hub:
        pub = publisher(any_stack.info.mqtt_url)
        sent = 0
        for car, series in fixes.items():
            topic = Topic.telemetry(car, root=root).value
            for fix in series:
                pub.publish(topic, encode_telemetry(fix))
                # Every third fix twice in a row: a QoS 1 redelivery.
                if fix.seq % 3 == 0:
                    pub.publish(topic, encode_telemetry(fix))
                    sent += 1
            # A backfill replaying the first ten fixes after the fact.
            pub.publish(topic, encode_telemetry_batch(series[:10]))
            sent += len(series) + 1
        pub.flush()
        wait_until(all_in(hub, sent), what="every message committed and acknowledged")
        unique = sum(len(series) for series in fixes.values())
        assert telemetry_count(migrated_database_url, root) == (unique, unique)
        assert hub.stats.fixes_stored == unique
        assert hub.stats.duplicates == hub.stats.fixes_received - unique
        assert hub.stats.dead_lettered == 0


def test_malformed_payloads_are_dead_lettered_and_ingest_goes_on(
    any_stack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    root = mqtt_topic_root
    settings = hub_settings(
        any_stack, database_url=migrated_database_url, redis_url=redis_url, root=root
    )
    car = f"{root}-car"
    seed_vehicles(migrated_database_url, [car])
    topic = Topic.telemetry(car, root=root).value
    bad = [
        (topic, b"not json"),
        (topic, b'{"v":2,"seq":1,"ts":1}'),
        (topic, b'{"seq":1,"ts":1,"lat":91}'),
        (f"{root}/{car}/status", b'{"online":1,"ts":1}'),
        (f"{root}/bad$id/telemetry", encode_telemetry(make_fix(1, now_ms()))),
    ]
    with running_hub(settings) as hub:
        pub = publisher(any_stack.info.mqtt_url)
        for bad_topic, payload in bad:
            pub.publish(bad_topic, payload)
        good = [make_fix(s, now_ms() - 10_000 + s) for s in range(5)]
        for fix in good:
            pub.publish(topic, encode_telemetry(fix))
        pub.flush()
        wait_until(all_in(hub, len(bad) + len(good)), what="all messages handled")
        assert telemetry_count(migrated_database_url, car) == (5, 5)
        assert hub.stats.dead_lettered == len(bad)
    with psycopg.connect(migrated_database_url) as conn:
        letters = conn.execute(
            "SELECT topic, payload, reason FROM dead_letters WHERE topic LIKE %s ORDER BY id",
            (f"{root}/%",),
        ).fetchall()
    assert sorted((t, bytes(p), r) for t, p, r in letters) == sorted(
        [
            (topic, b"not json", "bad_json"),
            (topic, b'{"v":2,"seq":1,"ts":1}', "unsupported_version"),
            (topic, b'{"seq":1,"ts":1,"lat":91}', "out_of_range"),
            (f"{root}/{car}/status", b'{"online":1,"ts":1}', "invalid_value"),
            (f"{root}/bad$id/telemetry", bad[4][1], "bad_topic"),
        ]
    )


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto_pub is not installed")
def test_mosquitto_pub_by_hand_is_stored(
    any_stack: DevStack, migrated_database_url: str, redis_url: str, mqtt_topic_root: str
) -> None:
    root = mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(migrated_database_url, [car])
    settings = hub_settings(
        any_stack, database_url=migrated_database_url, redis_url=redis_url, root=root
    )
    ts = now_ms() - 1234
    # Written by hand, as a third-party unit would, spaces and all.
    payload = (
        '{ "v": 1, "seq": 41, "ts": TS, "lat": 31.2304, "lon": 121.4737, "speed_kmh": 12.5,'
        ' "heading": null, "odometer_km": 15000.2, "battery_pct": 81,'
        ' "locked": true, "doors_open": false, "engine_on": true, "acme_tpms": [2.3, 2.4] }'
    ).replace("TS", str(ts))
    broker = BrokerUrl.parse(any_stack.info.mqtt_url)
    command = [
        "mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-i", f"{root}-by-hand",
        "-u", str(broker.username), "-P", str(broker.password), "-q", "1",
    ]  # fmt: skip
    with running_hub(settings) as hub:
        subprocess.run(
            [*command, "-t", f"{root}/{car}/telemetry", "-m", payload],
            check=True,
            timeout=WAIT_S,
        )
        wait_until(all_in(hub, 1), what="the hand-written fix")
    with psycopg.connect(migrated_database_url) as conn:
        stored = conn.execute(
            "SELECT seq, extract(epoch FROM ts) * 1000, lat, lon, speed_kmh, heading,"
            " odometer_km, fuel_pct, battery_pct, locked, doors_open, engine_on, extra"
            " FROM telemetry WHERE vehicle_id = %s",
            (car,),
        ).fetchall()
    assert stored == [
        (41, ts, 31.2304, 121.4737, 12.5, None, 15000.2, None, 81.0, True, False, True,
         {"acme_tpms": [2.3, 2.4]}),
    ]  # fmt: skip
    current = state_of(migrated_database_url, car)
    assert current is not None
    assert (current["seq"], current["locked"], current["online"]) == (41, True, True)


def test_status_only_fix_is_placed_at_the_last_known_position(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    root = mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(migrated_database_url, [car])
    settings = hub_settings(
        devstack, database_url=migrated_database_url, redis_url=redis_url, root=root
    )
    t = now_ms() - 30_000
    topic = Topic.telemetry(car, root=root).value
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(topic, encode_telemetry(make_fix(1, t, lat=31.1, lon=121.1)))
        unlock = make_fix(2, t + 1000, lat=None, lon=None, speed_kmh=None, heading=None)
        pub.publish(topic, encode_telemetry(unlock.model_copy(update={"locked": False})))
        # A GPS glitch at null island that also reports the doors opening: kept, re-placed.
        glitch = make_fix(3, t + 2000, lat=0.0, lon=0.0, doors_open=True)
        pub.publish(topic, encode_telemetry(glitch))
        # The same glitch with nothing changed is dropped.
        pub.publish(
            topic, encode_telemetry(make_fix(4, t + 3000, lat=0.0, lon=0.0, doors_open=True))
        )
        # A backfilled older fix (50 m back) is stored but does not move the state back.
        pub.publish(topic, encode_telemetry(make_fix(0, t - 5000, lat=31.0995, lon=121.1)))
        pub.flush()
        wait_until(all_in(hub, 5), what="five messages")
        assert hub.stats.filtered[Reason.INVALID_POSITION] == 1
        assert hub.stats.kept_for_status[Reason.INVALID_POSITION] == 1
    with psycopg.connect(migrated_database_url) as conn:
        rows = conn.execute(
            "SELECT seq, lat, lon, speed_kmh, doors_open, extra FROM telemetry"
            " WHERE vehicle_id = %s ORDER BY ts",
            (car,),
        ).fetchall()
    assert rows == [
        (0, 31.0995, 121.1, 30.0, False, None),
        (1, 31.1, 121.1, 30.0, False, None),
        (2, 31.1, 121.1, None, False, {"_hub": {"position_ts": t}}),
        (3, 31.1, 121.1, None, True, {"_hub": {"position_ts": t}}),
    ]
    current = state_of(migrated_database_url, car)
    assert current is not None
    assert (current["seq"], current["lat"], current["lon"], current["doors_open"]) == (
        3, 31.1, 121.1, True,
    )  # fmt: skip


def test_online_and_offline_from_status_and_from_silence(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    root = mqtt_topic_root
    talker, silent = f"{root}-talker", f"{root}-silent"
    seed_vehicles(migrated_database_url, [talker, silent])
    settings = hub_settings(
        devstack,
        database_url=migrated_database_url,
        redis_url=redis_url,
        root=root,
        hub_silence_timeout_s=1.0,
        hub_sweep_interval_s=0.2,
    )
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        for car in (talker, silent):
            pub.publish(
                Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(1, now_ms()))
            )
        pub.publish(Topic.status(talker, root=root).value, online_payload(now_ms()))
        pub.flush()
        wait_until(all_in(hub, 3), what="the first messages")
        # The talker's unit goes away: the broker publishes its will.
        pub.publish(Topic.status(talker, root=root).value, last_will_payload(now_ms() - 60_000))
        pub.flush()

        def offline(car: str) -> bool:
            current = state_of(migrated_database_url, car)
            return current is not None and current["online"] is False

        wait_until(lambda: offline(talker), what="the will to mark the talker offline")
        wait_until(lambda: offline(silent), what="the silence sweep")
        assert hub.stats.marked_offline >= 1
        # A fix brings it back.
        pub.publish(
            Topic.telemetry(silent, root=root).value, encode_telemetry(make_fix(2, now_ms()))
        )
        pub.flush()
        wait_until(lambda: not offline(silent), what="a fix to bring the silent car back online")


def test_live_fanout_reaches_redis_coalesced_per_vehicle(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    root = mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(migrated_database_url, [car])
    settings = hub_settings(
        devstack, database_url=migrated_database_url, redis_url=redis_url, root=root
    )
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(LIVE_CHANNEL)
    # Wait for the subscription to be confirmed (get_message handles the confirmation).
    wait_until(lambda: listener.get_message(timeout=0.05) is None and listener.subscribed,
               what="the Redis subscription")  # fmt: skip
    received: list[tuple[float, dict[str, Any]]] = []

    def collect() -> None:
        while (message := listener.get_message(timeout=0.05)) is not None:
            data = json.loads(message["data"])
            # Events share the channel (`type: event`); this test follows the state changes.
            if data["vid"] == car and data.get("type") != "event":
                received.append((time.monotonic(), data))

    try:
        with running_hub(settings) as hub:
            pub = publisher(devstack.info.mqtt_url)
            t = now_ms() - 10_000
            # Thirty fixes as fast as they go: far more than one a second.
            for s in range(30):
                fix = make_fix(s, t + s * 100, lat=31.2304 + s * 1e-5)
                pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(fix))
            pub.flush()
            wait_until(all_in(hub, 30), what="thirty fixes")

            def latest_arrived() -> bool:
                collect()
                return bool(received) and received[-1][1]["ts"] == t + 2900

            wait_until(latest_arrived, what="the newest state on the live channel")
            assert hub.stats.live_published >= 1
    finally:
        listener.close()
    # Coalesced: a handful of messages, never two within the same interval.
    assert len(received) < 30
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(received)]
    assert all(gap > 0.5 for gap in gaps), gaps
    last = received[-1][1]
    assert last["lat"] == pytest.approx(31.2304 + 29e-5)
    assert (last["locked"], last["online"], last["fuel_pct"]) == (False, True, 50.0)
    assert set(last) >= {"vid", "ts", "lat", "lon", "speed_kmh", "heading", "seen"}


def test_a_message_the_database_refuses_is_dead_lettered_alone(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    root = mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(migrated_database_url, [car])
    settings = hub_settings(
        devstack,
        database_url=migrated_database_url,
        redis_url=redis_url,
        root=root,
        hub_batch_max_delay_ms=300,
    )
    topic = Topic.telemetry(car, root=root).value
    t = now_ms() - 10_000
    # Valid JSON and valid protocol v1, but jsonb cannot hold a NUL character.
    poison = encode_telemetry(make_fix(5, t + 5, acme_note="a\u0000b"))
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        for s in range(10):
            pub.publish(topic, poison if s == 5 else encode_telemetry(make_fix(s, t + s)))
        pub.flush()
        wait_until(all_in(hub, 10), what="ten messages")
        assert hub.stats.refused_by_database == 1
    assert telemetry_count(migrated_database_url, car) == (9, 9)
    with psycopg.connect(migrated_database_url) as conn:
        letters = conn.execute(
            "SELECT payload, reason FROM dead_letters WHERE topic = %s", (topic,)
        ).fetchall()
    assert letters == [(poison, "refused_by_database")]
