"""No message stops ingest: one the database refuses, a bug in a step, a bug in detection.

Each is isolated to the message (a dead letter, with its reason) or to the vehicle (its
events), and the rest of the batch commits; nothing is retried forever.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from hub_testing import (
    hub_settings,
    make_fix,
    now_ms,
    query_rows,
    running_hub,
    seed_vehicles,
    telemetry_count,
    wait_until,
)

from hub.events.conditions import ConditionDetector
from hub.repository import telemetry
from hub.service import Hub
from protocol.telemetry import encode_telemetry
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import pytest
    from hub_testing import Publisher

    from db.telemetry import TelemetryRow
    from devstack.stack import DevStack
    from hub.events.model import Event

# Long enough that a message and the fixes published right after it share a batch.
ONE_BATCH_MS = 1000


def poisoned_ack(cmd_id: uuid.UUID) -> bytes:
    """A valid ack (JSON and protocol v1) whose reason PostgreSQL text cannot hold."""
    return b'{"v":1,"cmd_id":"%s","status":"rejected","reason":"bad\\u0000reason","ts":%d}' % (
        str(cmd_id).encode(),
        now_ms(),
    )


def letters_of(url: str, topic: str) -> list[tuple[bytes, str]]:
    rows = query_rows(url, "SELECT payload, reason FROM dead_letters WHERE topic = %s", topic)
    return [(bytes(payload), str(reason)) for payload, reason in rows]


def test_an_ack_the_database_refuses_is_dead_lettered_and_the_batch_commits(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    culprit = f"{root}-culprit"
    others = [f"{root}-c{i}" for i in range(3)]
    seed_vehicles(url, [culprit, *others])
    settings = hub_settings(
        devstack,
        database_url=url,
        redis_url=redis_url,
        root=root,
        hub_batch_max_delay_ms=ONE_BATCH_MS,
    )
    ack_topic = Topic.ack(culprit, root=root).value
    first, second = poisoned_ack(uuid.uuid4()), poisoned_ack(uuid.uuid4())
    start = now_ms() - 10_000
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(ack_topic, first)
        for car in others:
            pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(1, start)))
        pub.flush()
        wait_until(lambda: hub.stats.messages_acked >= 4, what="the batch committed")
        assert telemetry_count(url, root) == (3, 3)
        assert hub.stats.refused_by_database == 1
    assert letters_of(url, ack_topic) == [(first, "refused_by_database")]

    # The hub away, the car says it again, and more fixes come: the broker delivers them
    # when the hub is back, and nothing stalls.
    pub = publisher(devstack.info.mqtt_url, "while-away")
    pub.publish(ack_topic, second)
    for car in others:
        pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(2, start + 1)))
    pub.flush()
    with running_hub(settings) as hub:
        wait_until(lambda: hub.stats.messages_acked >= 4, what="the queued batch committed")
        assert hub.stats.refused_by_database == 1
    assert telemetry_count(url, root) == (6, 6)
    assert sorted(letters_of(url, ack_topic)) == sorted(
        [(first, "refused_by_database"), (second, "refused_by_database")]
    )


def test_a_bug_in_a_step_costs_only_the_message_it_fails_on(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    culprit = f"{root}-culprit"
    others = [f"{root}-c{i}" for i in range(3)]
    seed_vehicles(url, [culprit, *others])
    store = telemetry.store_telemetry

    def store_unless_culprit(conn: Any, rows: Iterable[TelemetryRow]) -> int:
        rows = list(rows)
        if any(row.vehicle_id == culprit for row in rows):
            raise RuntimeError("a bug that fails every time")
        return store(conn, rows)

    monkeypatch.setattr(telemetry, "store_telemetry", store_unless_culprit)
    settings = hub_settings(
        devstack,
        database_url=url,
        redis_url=redis_url,
        root=root,
        hub_batch_max_delay_ms=ONE_BATCH_MS,
    )
    start = now_ms() - 10_000
    culprit_topic = Topic.telemetry(culprit, root=root).value
    bad = encode_telemetry(make_fix(1, start))
    with running_hub(settings) as hub:
        pub = publisher(devstack.info.mqtt_url)
        pub.publish(culprit_topic, bad)
        for car in others:
            pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(1, start)))
        pub.flush()
        wait_until(lambda: hub.stats.messages_acked >= 4, what="the batch committed")
        assert hub.stats.hub_errors == 1
    assert telemetry_count(url, root) == (3, 3)
    assert letters_of(url, culprit_topic) == [(bad, "hub_error")]


class BrokenFor(ConditionDetector):
    """The condition detector, with a bug that strikes one vehicle's fixes."""

    def __init__(self, vehicle_id: str) -> None:
        super().__init__()
        self.vehicle_id = vehicle_id

    def apply_fixes(self, rows: Iterable[TelemetryRow], **kwargs: Any) -> list[Event]:
        rows = list(rows)
        if any(row.vehicle_id == self.vehicle_id for row in rows):
            raise RuntimeError("a detector bug")
        return super().apply_fixes(rows, **kwargs)


def test_a_detector_that_fails_for_one_vehicle_costs_only_its_events(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    culprit, fine = f"{root}-culprit", f"{root}-fine"
    seed_vehicles(url, [culprit, fine])
    settings = hub_settings(
        devstack,
        database_url=url,
        redis_url=redis_url,
        root=root,
        hub_batch_max_delay_ms=ONE_BATCH_MS,
    )
    start = now_ms() - 10_000
    low = {"fuel_pct": 5.0, "engine_on": False, "speed_kmh": 0.0}
    hub = Hub(settings)
    hub.events.detector = BrokenFor(culprit)
    caplog.set_level(logging.ERROR, logger="hub.events.pipeline")
    with hub:
        assert hub.consumer.wait_connected(30)
        pub = publisher(devstack.info.mqtt_url)
        # One batch: both cars run low on fuel.
        for car in (culprit, fine):
            pub.publish(
                Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(1, start, **low))
            )
        pub.flush()
        wait_until(lambda: hub.stats.messages_acked >= 2, what="the batch committed")
        # Ingest goes on: later fixes of both are stored too.
        for car in (culprit, fine):
            pub.publish(
                Topic.telemetry(car, root=root).value,
                encode_telemetry(make_fix(2, start + 1000, **low)),
            )
        pub.flush()
        wait_until(lambda: hub.stats.messages_acked >= 4, what="the next batch committed")
        assert hub.stats.detection_errors >= 1
    assert telemetry_count(url, root) == (4, 4)
    kinds = query_rows(
        url, "SELECT vehicle_id, kind FROM events WHERE vehicle_id LIKE %s", f"{root}%"
    )
    assert kinds == [(fine, "low_fuel")]
    assert any(culprit in record.getMessage() for record in caplog.records)


def test_a_batch_no_step_can_write_is_dead_lettered_whole_and_ingest_goes_on(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    cars = [f"{root}-c{i}" for i in range(3)]
    seed_vehicles(url, cars)
    settings = hub_settings(
        devstack,
        database_url=url,
        redis_url=redis_url,
        root=root,
        hub_batch_max_delay_ms=ONE_BATCH_MS,
    )
    start = now_ms() - 10_000
    hub = Hub(settings)
    working = hub.events.prepare

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug in the first step, whatever the batch")

    monkeypatch.setattr(hub.events, "prepare", broken)
    with hub:
        assert hub.consumer.wait_connected(30)
        pub = publisher(devstack.info.mqtt_url)
        for car in cars:
            pub.publish(Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(1, start)))
        pub.flush()
        # Tried as it is, then isolating, then every message kept as a dead letter.
        wait_until(lambda: hub.stats.messages_acked >= 3, what="the batch set aside")
        assert hub.stats.hub_errors == 3
        assert telemetry_count(url, root) == (0, 0)
        # Fixed (say, a new release): the next messages are stored as usual.
        monkeypatch.setattr(hub.events, "prepare", working)
        for car in cars:
            pub.publish(
                Topic.telemetry(car, root=root).value, encode_telemetry(make_fix(2, start + 1000))
            )
        pub.flush()
        wait_until(lambda: telemetry_count(url, root) == (3, 3), what="the next fixes stored")
    letters = query_rows(
        url,
        "SELECT topic, reason FROM dead_letters WHERE topic LIKE %s ORDER BY topic",
        f"{root}/%",
    )
    assert letters == [(Topic.telemetry(car, root=root).value, "hub_error") for car in cars]
