"""Status events through a real hub: stored once, kept across restarts, on the live channel."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import psycopg
import redis
from geofence_testing import LAT0, LON0, at, circle, square
from hub_testing import (
    WAIT_S,
    hub_settings,
    make_fix,
    now_ms,
    query_rows,
    running_hub,
    seed_vehicles,
    wait_until,
)

from db.geofences import GeofenceSpec, insert_geofence
from hub.fanout import LIVE_CHANNEL
from protocol.acks import Ack, AckStatus, encode_ack
from protocol.telemetry import encode_telemetry, encode_telemetry_batch
from protocol.topics import Topic

if TYPE_CHECKING:
    import uuid
    from collections.abc import Callable

    from hub_testing import Publisher

    from db.geofences.model import Geofence
    from devstack.stack import DevStack


def events_of(url: str, vehicle: str) -> list[tuple[str, bool]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT kind, notify FROM events WHERE vehicle_id = %s ORDER BY ts, id", (vehicle,)
        ).fetchall()
    return [(str(kind), bool(notify)) for kind, notify in rows]


def test_events_are_raised_once_and_survive_a_restart(
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
    parked = {"speed_kmh": 0.0, "engine_on": False, "locked": True}
    first = [
        make_fix(1, start, fuel_pct=30.0, **parked),
        make_fix(2, start + 1000, fuel_pct=12.0, **parked),
        make_fix(3, start + 2000, fuel_pct=11.0, doors_open=True, **parked),
    ]
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(LIVE_CHANNEL)
    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url)
        for fix in first:
            pub.publish(topic, encode_telemetry(fix))
        pub.flush()
        wait_until(lambda: len(events_of(url, car)) >= 2, what="two events stored")
    assert events_of(url, car) == [("low_fuel", True), ("door_open_while_locked", True)]

    # A new hub (a restart) gets the same fixes again plus more of the same condition.
    later = [
        make_fix(4, start + 3000, fuel_pct=10.0, doors_open=True, **parked),
        make_fix(5, start + 4000, fuel_pct=10.0, doors_open=False, **parked),
    ]
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url, "again")
        pub.publish(topic, encode_telemetry_batch([*first, *later]))
        pub.flush()
        wait_until(lambda: hub.stats.fixes_received >= len(first) + len(later), what="replay")
        wait_until(lambda: hub.stats.messages_acked >= 1, what="the replay committed")
    assert events_of(url, car) == [("low_fuel", True), ("door_open_while_locked", True)]

    seen: list[str] = []

    def drain() -> bool:
        # get_message answers None for the subscription's confirmation too: read until quiet.
        while (message := listener.get_message(timeout=0.1)) is not None:
            data = json.loads(message["data"])
            if data.get("type") == "event" and data["vid"] == car:
                seen.append(data["kind"])
        return len(seen) >= 2

    wait_until(drain, what="the events on the live channel")
    listener.close()
    assert sorted(seen) == ["door_open_while_locked", "low_fuel"]


def test_silence_raises_offline_and_a_refused_command_raises_command_failed(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "INSERT INTO vehicle_commands (vehicle_id, action, status, issued_by, sent_at,"
            " expires_at) VALUES (%s, 'unlock', 'sent', 'test', now(),"
            " now() + interval '1 minute') RETURNING id",
            (car,),
        ).fetchone()
    assert row is not None
    cmd_id: uuid.UUID = row[0]
    settings = hub_settings(
        devstack,
        database_url=url,
        redis_url=redis_url,
        root=root,
        hub_silence_timeout_s=1.0,
        hub_sweep_interval_s=0.2,
    )
    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(1, now_ms())))
        ack = Ack(
            cmd_id=cmd_id, status=AckStatus.REJECTED, reason="unsafe_while_moving", ts=now_ms()
        )
        pub.publish(Topic.ack(car, root=root).value, encode_ack(ack))
        pub.flush()
        wait_until(
            lambda: ("offline", True) in events_of(url, car), what="the silent car marked offline"
        )
    kinds = [kind for kind, _ in events_of(url, car)]
    assert kinds.count("command_failed") == 1
    assert kinds.count("offline") == 1
    with psycopg.connect(url) as conn:
        details = conn.execute(
            "SELECT details FROM events WHERE vehicle_id = %s AND kind = 'command_failed'", (car,)
        ).fetchone()
    assert details is not None
    assert details[0]["reason"] == "unsafe_while_moving"
    assert details[0]["cmd_id"] == str(cmd_id)


def add_fence(url: str, fence: Geofence) -> int:
    data = fence.model_dump(exclude={"id", "created_at", "updated_at"})
    with psycopg.connect(url) as conn:
        return insert_geofence(conn, GeofenceSpec.model_validate(data)).id


def test_geofence_events_through_the_hub_once_across_a_restart_and_a_fence_change(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    area = add_fence(url, square(0, 500, kind="service_area", enter_margin_m=10, exit_margin_m=10))
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    topic = Topic.telemetry(car, root=root).value
    # Ten seconds between fixes 100 m apart: 36 km/h, a plausible town speed.
    start = now_ms() - 200_000

    def drive(seq: int, east_m: float) -> bytes:
        lat, lon = at(east_m, 0.0)
        return encode_telemetry(
            make_fix(seq, start + seq * 10_000, lat=lat, lon=lon, speed_kmh=30.0, locked=False)
        )

    def fence_events() -> list[str]:
        return [k for k, _ in events_of(url, car) if k.startswith(("geofence", "left"))]

    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url)
        for seq, east in enumerate([0, 100, 200]):
            pub.publish(topic, drive(seq, east))
        pub.flush()
        wait_until(lambda: fence_events() == ["geofence_enter"], what="the enter")
    # Restarted mid-stay: more fixes inside raise nothing; leaving raises exit once.
    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url, "again")
        for seq, east in enumerate([300, 400, 700, 800], start=3):
            pub.publish(topic, drive(seq, east))
        pub.flush()
        wait_until(lambda: len(fence_events()) >= 3, what="the exit")
        # A new fence around where the car now is, added while the hub runs: reloaded.
        zone = add_fence(url, circle(0, 300, east_m=900.0, kind="parking_zone"))
        pub.publish(topic, drive(7, 900))
        pub.publish(topic, drive(8, 910))
        pub.flush()
        wait_until(lambda: len(fence_events()) >= 4, what="the enter into the new zone")
    # The exit and its meaning share a timestamp, so their order between them is not set.
    assert sorted(fence_events()) == sorted(
        ["geofence_enter", "geofence_exit", "left_service_area", "geofence_enter"]
    )
    with psycopg.connect(url) as conn:
        fences = [
            row[0]
            for row in conn.execute(
                "SELECT geofence_id FROM events WHERE vehicle_id = %s AND kind LIKE 'geofence%%'"
                " ORDER BY ts, id",
                (car,),
            ).fetchall()
        ]
    assert fences == [area, area, zone]


def test_one_fix_entering_two_fences_gives_each_event_its_own_fence_and_rule(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    # Two fences over the same spot, each with its own rule for entering it; away from the
    # other tests' fences (this module's database is shared).
    here = {"lat0": LAT0 + 1.0, "lon0": LON0}
    outer = add_fence(url, square(0, 500, kind="parking_zone", **here))
    inner = add_fence(url, circle(0, 200, kind="parking_zone", **here))
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO event_rules (kind, geofence_id, channels, command)"
            " VALUES ('geofence_enter', %s, '{}', 'honk'), ('geofence_enter', %s, '{}', 'locate')",
            (outer, inner),
        )
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(LIVE_CHANNEL)
    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url)
        # The car's first fix, inside both: one fix, two enters, one timestamp.
        lat, lon = at(0.0, 0.0, **here)
        fix = make_fix(1, now_ms() - 1000, lat=lat, lon=lon, locked=False)
        pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(fix))
        pub.flush()
        wait_until(
            lambda: (
                len(query_rows(url, "SELECT 1 FROM vehicle_commands WHERE vehicle_id = %s", car))
                >= 2
            ),
            what="both rules' commands",
        )
    enters = query_rows(
        url,
        "SELECT id, geofence_id FROM events WHERE vehicle_id = %s AND kind = 'geofence_enter'",
        car,
    )
    assert sorted(fence for _, fence in enters) == sorted([outer, inner])
    commanded = query_rows(
        url, "SELECT correlation_id, action FROM vehicle_commands WHERE vehicle_id = %s", car
    )
    action_of_fence = {outer: "honk", inner: "locate"}
    assert sorted(commanded) == sorted(
        (f"event:{event_id}", action_of_fence[fence]) for event_id, fence in enters
    )
    # The live channel names each event with its own fence.
    live: dict[int, int] = {}
    deadline = time.monotonic() + WAIT_S
    while len(live) < 2 and time.monotonic() < deadline:
        message = listener.get_message(timeout=1.0)
        if message is not None:
            body = json.loads(message["data"])
            if body.get("type") == "event" and body["kind"] == "geofence_enter":
                live[body["id"]] = body["geofence_id"]
    listener.close()
    assert live == dict(enters)
