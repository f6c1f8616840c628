"""Two hubs on one shared subscription keep one event state per vehicle.

The broker hands each hub some of a vehicle's messages. Without taking turns on the
vehicle's state each hub would judge its half of the track against stale memory: an enter
seen by one hub and the next fix inside seen by the other would raise two enters, and a
change of fuel level seen by either would fire twice or never.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import psycopg
import pytest
from geofence_testing import at, circle, fix, square
from hub_testing import (
    hub_settings,
    make_fix,
    now_ms,
    running_hub,
    seed_vehicles,
    telemetry_count,
    wait_until,
)
from test_hub_events import add_fence, events_of

from db.geofences import VehiclePosition
from hub.events.conditions import ConditionDetector, Conditions
from hub.geofences import GeofenceEngine, TransitionKind
from hub.repository import event_state
from protocol.telemetry import encode_telemetry
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub_testing import Publisher

    from devstack.stack import DevStack
    from hub.settings import HubSettings

# Out, in, in, out, out, in, in, out: delivered to the two hubs in turn, each hub alone
# would see out, in, out, in and its own half of every stay.
TRACK_EAST_M = [-900, 0, 100, 900, 1000, 0, 100, 900, 1000, -100, 0, 900]
FUEL_PCT = [40, 40, 12, 12, 11, 11, 11, 30, 30, 30, 12, 12]


def test_two_hubs_raise_each_event_once_for_a_track_split_between_them(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    if not devstack.info.mqtt_shared_subscriptions:
        pytest.skip("amqtt has no shared subscriptions: two hubs would each get everything")
    url, root = migrated_database_url, mqtt_topic_root
    car = f"{root}-car"
    seed_vehicles(url, [car])
    add_fence(url, square(0, 300, kind="service_area", enter_margin_m=10, exit_margin_m=10))
    topic = Topic.telemetry(car, root=root).value
    start = now_ms() - 200_000

    def settings(name: str) -> HubSettings:
        return hub_settings(devstack, database_url=url, redis_url=redis_url, root=root, name=name)

    with running_hub(settings("hub-a")) as hub_a, running_hub(settings("hub-b")) as hub_b:
        pub = publisher(devstack.info.mqtt_url)
        # One fix at a time, each stored before the next leaves: the broker alternates
        # between the hubs, and the order of the track is the order of the commits.
        for seq, (east, fuel) in enumerate(zip(TRACK_EAST_M, FUEL_PCT, strict=True)):
            lat, lon = at(float(east), 0.0)
            fix = make_fix(seq, start + seq * 10_000, lat=lat, lon=lon, fuel_pct=float(fuel))
            pub.publish(topic, encode_telemetry(fix))
            pub.flush()
            wait_until(
                lambda n=seq + 1: telemetry_count(url, car)[0] >= n, what=f"fix {seq} stored"
            )
        shares = [hub_a.stats.fixes_stored, hub_b.stats.fixes_stored]
        reloads = [hub_a.stats.state_reloads, hub_b.stats.state_reloads]
    assert sum(shares) == len(TRACK_EAST_M)
    assert min(shares) > 0, "the broker gave every fix to one hub: nothing was shared"
    assert min(reloads) > 0, "neither hub picked up the other's changes"
    kinds = [kind for kind, _ in events_of(url, car) if kind != "engine_on_without_trip"]
    # Exits and their meaning share a timestamp: compare each stay's events as a set.
    assert kinds[:1] == ["geofence_enter"]
    assert sorted(kinds) == sorted(
        ["geofence_enter", "geofence_exit", "left_service_area"] * 3 + ["low_fuel", "low_fuel"]
    )


def test_an_engine_resumes_a_vehicle_another_engine_moved_on() -> None:
    fence = circle(0, 200, enter_margin_m=10, exit_margin_m=10)
    mine, other = GeofenceEngine([fence]), GeofenceEngine([fence])
    assert mine.evaluate([fix(-900, 0, 0)]) == []
    other.evaluate([fix(-900, 0, 0)])
    # The other hub sees the car drive in; this one has not heard of it since.
    (entered,) = other.evaluate([fix(0, 0, 10)])
    assert entered.kind is TransitionKind.ENTER
    last = fix(0, 0, 10)
    mine.replace_vehicles(
        ["car-1"],
        other.states(),
        [VehiclePosition(last.vehicle_id, last.ts, last.lat, last.lon)],  # type: ignore[arg-type]
    )
    # Inside already: no second enter; leaving is one exit, and only this hub's.
    assert mine.evaluate([fix(50, 0, 20)]) == []
    assert [t.kind for t in mine.evaluate([fix(900, 0, 30)])] == [TransitionKind.EXIT]
    # A vehicle replaced with no stored state is outside everything, from scratch.
    mine.replace_vehicles(["car-1"], [])
    assert mine.inside("car-1") == []


def test_a_detector_takes_another_hubs_conditions_for_some_vehicles() -> None:
    detector = ConditionDetector()
    detector.load({"a": Conditions(low_fuel=True, last_ts=5.0), "b": Conditions(last_ts=5.0)})
    detector.record("a").idle = True
    detector.replace(
        ["a", "c"], {"a": Conditions(last_ts=7.0)}, {"a": (9.0, None), "c": (3.0, None)}
    )
    assert (detector.record("a").low_fuel, detector.record("a").idle) == (False, False)
    assert detector.record("a").last_ts == 9.0
    assert detector.record("c").last_ts == 3.0
    # Vehicles not named keep what this hub knew.
    assert detector.record("b").last_ts == 5.0
    assert detector.take_dirty() == {}


def test_the_second_hub_to_lock_a_vehicle_waits_for_the_first_to_commit(
    migrated_database_url: str, mqtt_topic_root: str
) -> None:
    car, other = f"{mqtt_topic_root}-car", f"{mqtt_topic_root}-other"
    with (
        psycopg.connect(migrated_database_url) as first,
        psycopg.connect(migrated_database_url) as second,
    ):
        event_state.lock_vehicles(first, [car])
        second.execute("SET lock_timeout = '200ms'")
        # A vehicle on another stripe goes ahead...
        assert event_state.lock_stripe(other) != event_state.lock_stripe(car)
        event_state.lock_vehicles(second, [other])
        second.rollback()
        # ...the same vehicle waits while the first transaction lasts...
        second.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            event_state.lock_vehicles(second, [other, car])
        second.rollback()
        # ...and gets it at the first's commit.
        got = threading.Event()

        def take() -> None:
            event_state.lock_vehicles(second, [car, other])
            got.set()

        waiter = threading.Thread(target=take)
        waiter.start()
        assert not got.wait(0.3)
        first.commit()
        waiter.join(10)
        assert got.is_set()
        second.rollback()
