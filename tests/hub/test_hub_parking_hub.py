"""Parked cars through a real hub: recorded wander held, a tow caught promptly, a restart.

Fixes are published over MQTT as agents send them; the hub stores, holds and judges them in
its batches, and what it did is read back from the database: events, commands, telemetry,
vehicle_state and `db.parking.parked_vehicles`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import psycopg
from gps_recordings import RECORDINGS, fixes
from hub_testing import (
    hub_settings,
    make_fix,
    now_ms,
    query_rows,
    running_hub,
    seed_vehicles,
    wait_until,
)

from db.parking import parked_vehicles
from protocol.telemetry import Telemetry, encode_telemetry
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub_testing import Publisher

    from devstack.stack import DevStack

PARKED: Final = {"locked": True, "engine_on": False}
FORBIDDEN: Final = ("moving_while_locked", "geofence_enter", "geofence_exit")
METRES_PER_DEGREE: Final = 111_195.0
LAT: Final = 31.2304
# A tow at 30 km/h with the agent's 5 s interval: 41.7 m a fix.
TOW_STEP_M: Final = 30 / 3.6 * 5


def publish(pub: Publisher, root: str, car: str, *fixes_: Telemetry) -> None:
    topic = Topic.telemetry(car, root=root).value
    for fix in fixes_:
        pub.publish(topic, encode_telemetry(fix))
    pub.flush()


def stored(url: str, car: str, seq: int) -> bool:
    return bool(
        query_rows(url, "SELECT 1 FROM telemetry WHERE vehicle_id = %s AND seq = %s", car, seq)
    )


def events_of(url: str, root: str) -> list[tuple[Any, ...]]:
    return query_rows(
        url,
        "SELECT vehicle_id, kind, ts, details FROM events"
        " WHERE vehicle_id LIKE %s AND kind = ANY(%s) ORDER BY id",
        f"{root}-%",
        list(FORBIDDEN),
    )


def state_position(url: str, car: str) -> tuple[float, float]:
    [(lat, lon)] = query_rows(url, "SELECT lat, lon FROM vehicle_state WHERE vehicle_id = %s", car)
    return lat, lon


def test_recorded_wander_is_held_at_the_parked_point_and_raises_nothing(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    cars = {name: f"{root}-{index}" for index, name in enumerate(RECORDINGS)}
    seed_vehicles(url, list(cars.values()))
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    sent: dict[str, list[Telemetry]] = {}
    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url)
        for name, car in cars.items():
            readings = fixes(name)
            start = now_ms() - (len(readings) + 5) * 1000
            sent[car] = [
                make_fix(
                    n + 1,
                    start + n * 1000,
                    lat=r.fix.lat,
                    lon=r.fix.lon,
                    speed_kmh=r.fix.speed_kmh,
                    heading=r.fix.heading,
                    accuracy_m=r.fix.accuracy_m,
                    **PARKED,
                )
                for n, r in enumerate(readings)
            ]
            # Every report a second apart, as a message each like an agent's.
            publish(pub, root, car, *sent[car])
        wait_until(
            lambda: all(stored(url, car, fixes_[-1].seq) for car, fixes_ in sent.items()),
            what="every car's last fix",
        )
    assert events_of(url, root) == []
    assert (
        query_rows(url, "SELECT 1 FROM vehicle_commands WHERE vehicle_id LIKE %s", f"{root}-%")
        == []
    )
    for car, sent_fixes in sent.items():
        first = sent_fixes[0]
        held = (first.lat, first.lon)
        # The live state, and every stored fix, at the parked point.
        assert state_position(url, car) == held
        rows = query_rows(
            url, "SELECT lat, lon, speed_kmh, extra FROM telemetry WHERE vehicle_id = %s", car
        )
        assert {(lat, lon) for lat, lon, _, _ in rows} == {held}
        assert {speed for _, _, speed, _ in rows} == {0.0}
        # What the receiver said is kept beside it.
        raw_speeds = {extra["_hub"]["raw"]["speed_kmh"] for *_, extra in rows if extra}
        assert max(raw_speeds) >= 40.0  # the recordings' fastest reports
    with psycopg.connect(url) as conn:
        parked = parked_vehicles(conn, list(sent))
    assert {car: (p.lat, p.lon) for car, p in parked.items()} == {
        car: (f[0].lat, f[0].lon) for car, f in sent.items()
    }
    car, sent_fixes = next(iter(sent.items()))
    assert parked[car].since == datetime.fromtimestamp(sent_fixes[0].ts / 1000, UTC)


def test_a_tow_raises_the_alarm_and_the_immobilize_command_30_s_after_it_starts(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-towed"
    seed_vehicles(url, [car])
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    start = now_ms() - 120_000
    parked = [
        make_fix(1, start, speed_kmh=0.0, **PARKED),
        make_fix(2, start + 30_000, speed_kmh=0.0, **PARKED),
    ]
    tow_start = start + 60_000
    tow = [
        make_fix(
            3 + i,
            tow_start + 5_000 * (i + 1),
            lat=LAT + TOW_STEP_M * (i + 1) / METRES_PER_DEGREE,
            speed_kmh=30.0,
            **PARKED,
        )
        for i in range(10)
    ]
    with running_hub(settings):
        publish(publisher(devstack.info.mqtt_url), root, car, *parked, *tow)
        wait_until(lambda: stored(url, car, tow[-1].seq), what="the tow's last fix")
        wait_until(
            lambda: query_rows(url, "SELECT 1 FROM vehicle_commands WHERE vehicle_id = %s", car),
            what="the rule's command",
        )
    [(_, kind, ts, details)] = events_of(url, root)
    # 160 m (150 m plus both fixes' 5 m) is passed by the fourth fix of the tow; the sixth,
    # 30 s after it started and 250 m away, proves it.
    assert kind == "moving_while_locked"
    assert ts == datetime.fromtimestamp(tow[5].ts / 1000, UTC)
    assert details == {"moved_m": 250.0, "away_s": 10.0, "fixes": 3, "speed_kmh": 30.0}
    [(action, issued_by)] = query_rows(
        url, "SELECT action, issued_by FROM vehicle_commands WHERE vehicle_id = %s", car
    )
    assert (action, issued_by) == ("immobilize", "rule:moving_while_locked")
    # No longer held: the map shows where the car is going.
    assert state_position(url, car) == (tow[-1].lat, tow[-1].lon)
    with psycopg.connect(url) as conn:
        assert parked_vehicles(conn, [car]) == {}


def test_a_restarted_hub_keeps_the_parked_point_and_the_evidence_so_far(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    towed, wandering = f"{root}-towed", f"{root}-wandering"
    seed_vehicles(url, [towed, wandering])
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)
    start = now_ms() - 120_000
    away = [
        make_fix(
            n,
            start + 60_000 + 5_000 * n,
            lat=LAT + 300 / METRES_PER_DEGREE,
            speed_kmh=0.0,
            **PARKED,
        )
        for n in (2, 3, 4)
    ]
    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url, "before")
        # One car parked, then two fixes of a tow (one short of the proof) before the restart;
        # the other parked, then 100 m off (wander).
        publish(pub, root, towed, make_fix(1, start, **PARKED), *away[:2])
        publish(pub, root, wandering, make_fix(1, start, **PARKED))
        publish(
            pub,
            root,
            wandering,
            make_fix(2, start + 5_000, lat=LAT + 100 / METRES_PER_DEGREE, **PARKED),
        )
        wait_until(lambda: stored(url, towed, 3) and stored(url, wandering, 2), what="the fixes")
    assert events_of(url, root) == []
    with running_hub(settings):
        pub = publisher(devstack.info.mqtt_url, "after")
        publish(pub, root, towed, away[2])
        publish(
            pub,
            root,
            wandering,
            make_fix(3, start + 10_000, lat=LAT - 100 / METRES_PER_DEGREE, **PARKED),
        )
        wait_until(lambda: stored(url, towed, 4) and stored(url, wandering, 3), what="the fixes")
        wait_until(lambda: events_of(url, root), what="the alarm")
    assert [(car, kind) for car, kind, *_ in events_of(url, root)] == [
        (towed, "moving_while_locked")
    ]
    assert state_position(url, wandering) == (LAT, 121.4737)
