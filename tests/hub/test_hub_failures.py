"""Failures on purpose: kill -9 the hub, restart the database and the broker, run two hubs."""

from __future__ import annotations

import re
import signal
import socket
import threading
from typing import TYPE_CHECKING

import pytest
from hub_testing import (
    hub_settings,
    make_fix,
    now_ms,
    running_hub,
    seed_vehicles,
    telemetry_count,
    wait_until,
)

from hub.service import Hub
from protocol.telemetry import encode_telemetry
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub_testing import HubProcess, Publisher

    from devstack.stack import DevStack
    from hub.settings import HubSettings

CARS = 20


def seed_cars(database_url: str, root: str) -> None:
    """Put the cars a `Stream` publishes for in the inventory."""
    seed_vehicles(database_url, [f"{root}-c{i}" for i in range(CARS)])


class Stream:
    """Publishes `count` fixes over CARS vehicles on a background thread, at full speed."""

    def __init__(self, pub: Publisher, root: str, count: int) -> None:
        self.count = count
        self.published = 0
        self._pub = pub
        self._root = root
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        start = now_ms() - 120_000
        try:
            for i in range(self.count):
                car = f"{self._root}-c{i % CARS}"
                fix = make_fix(i, start + i, lat=31.2304 + (i // CARS) * 1e-6)
                self._pub.publish(
                    Topic.telemetry(car, root=self._root).value, encode_telemetry(fix)
                )
                self.published = i + 1
            self._pub.flush()
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self._error = exc

    def finish(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive(), "publisher stuck"
        if self._error is not None:
            raise self._error


def received_in_log(process: HubProcess) -> int:
    match = re.search(r"stopped: received (\d+) msgs", process.log())
    assert match, process.log()
    return int(match[1])


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(  # noqa: PLR0917 - fixtures
    any_stack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    hub_process: Callable[[HubSettings], HubProcess],
) -> None:
    stack = any_stack
    if stack.info.mqtt_broker == "amqtt":
        # Measured with amqtt 0.12: a resumed session gets the messages queued while it was
        # away, but not those it had received and not acknowledged (MQTT requires both).
        pytest.skip("amqtt does not resend unacknowledged messages when a session resumes")
    root = mqtt_topic_root
    seed_cars(migrated_database_url, root)
    settings = hub_settings(
        stack, database_url=migrated_database_url, redis_url=redis_url, root=root
    )
    total = 3000
    hub = hub_process(settings).start()
    stream = Stream(publisher(stack.info.mqtt_url), root, total).start()
    wait_until(lambda: telemetry_count(migrated_database_url, root)[0] >= 300, what="a first batch")
    hub.signal(signal.SIGKILL)
    stored_before = telemetry_count(migrated_database_url, root)[0]
    assert stored_before < total, "the stream finished before the kill: make it longer"
    stream.finish()
    # Everything published while the hub was dead waits in its session, as do the messages
    # it had received but not acknowledged.
    restarted = hub_process(settings).start()
    wait_until(
        lambda: telemetry_count(migrated_database_url, root)[0] >= total,
        what="every fix after the restart",
    )
    assert restarted.signal(signal.SIGTERM) == 0
    assert telemetry_count(migrated_database_url, root) == (total, total)


def test_database_restart_mid_stream_loses_nothing(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    root = mqtt_topic_root
    seed_cars(migrated_database_url, root)
    # Small batches and window, to see the bound hold.
    window = 400
    settings = hub_settings(
        devstack,
        database_url=migrated_database_url,
        redis_url=redis_url,
        root=root,
        hub_batch_max_fixes=window // 2,
        hub_receive_maximum=window,
    )
    total = 6000
    with running_hub(settings) as hub:
        stream = Stream(publisher(devstack.info.mqtt_url, window=100), root, total).start()
        wait_until(lambda: hub.stats.fixes_stored >= 200, what="a first batch")
        try:
            devstack.postgres.kill()
            wait_until(lambda: hub.stats.database_errors > 0, what="the hub to notice")
            # The broker keeps taking the stream and queues it; the hub acknowledges nothing
            # and holds a bounded amount: the broker's window, and at most two batches at
            # twice the batch size whatever the broker does.
            bound = 2 * hub.batcher.hard_cap_fixes + 2
            wait_until(
                lambda: stream.published >= hub.stats.messages_received + 1500,
                what="the stream to run ahead of the hub",
            )
            acked = hub.stats.messages_acked
            assert hub.stats.messages_received - acked <= bound
            ahead = stream.published
            wait_until(lambda: stream.published >= ahead + 500, what="more of the stream")
            assert hub.stats.messages_acked == acked
            assert hub.stats.messages_received - acked <= bound
            assert stream.published - hub.stats.messages_received >= 2000
        finally:
            devstack.postgres.start()
        stream.finish()
        # Once it is back, everything is committed, nothing twice.
        wait_until(
            lambda: telemetry_count(migrated_database_url, root)[0] >= total,
            what="every fix after the database restart",
        )
    assert telemetry_count(migrated_database_url, root) == (total, total)


def test_broker_restart_mid_stream_loses_nothing(
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
) -> None:
    if devstack.info.mqtt_broker != "mosquitto":
        pytest.skip("amqtt forgets sessions and queued messages when it restarts")
    root = mqtt_topic_root
    seed_cars(migrated_database_url, root)
    settings = hub_settings(
        devstack, database_url=migrated_database_url, redis_url=redis_url, root=root
    )
    total = 3000
    with running_hub(settings) as hub:
        stream = Stream(publisher(devstack.info.mqtt_url, window=100), root, total).start()
        wait_until(lambda: hub.stats.fixes_stored >= 200, what="a first batch")
        connections = hub.stats.mqtt_connections
        # A graceful restart: Mosquitto saves sessions and queued messages to disk first.
        devstack.mqtt.restart()
        wait_until(lambda: hub.stats.mqtt_connections > connections, what="the hub to reconnect")
        stream.finish()
        wait_until(
            lambda: telemetry_count(migrated_database_url, root)[0] >= total,
            what="every fix after the broker restart",
        )
    assert telemetry_count(migrated_database_url, root) == (total, total)


def test_two_hub_processes_store_each_fix_once(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    publisher: Callable[..., Publisher],
    hub_process: Callable[[HubSettings], HubProcess],
) -> None:
    if not devstack.info.mqtt_shared_subscriptions:
        pytest.skip("amqtt has no shared subscriptions: two hubs would each get everything")
    root = mqtt_topic_root
    seed_cars(migrated_database_url, root)
    hubs = [
        hub_process(
            hub_settings(
                devstack,
                database_url=migrated_database_url,
                redis_url=redis_url,
                root=root,
                name=name,
            )
        ).start()
        for name in ("hub-a", "hub-b")
    ]
    total = 2000
    Stream(publisher(devstack.info.mqtt_url), root, total).start().finish()
    wait_until(
        lambda: telemetry_count(migrated_database_url, root)[0] >= total, what="every fix stored"
    )
    assert [hubs[0].signal(signal.SIGINT), hubs[1].signal(signal.SIGTERM)] == [0, 0]
    assert telemetry_count(migrated_database_url, root) == (total, total)
    # The broker gave each message to one hub: both worked, neither saw the other's share.
    shares = [received_in_log(hub) for hub in hubs]
    assert sum(shares) == total
    assert min(shares) > 0


def test_a_hub_waits_for_its_database_and_stops_when_asked(
    devstack: DevStack, redis_url: str, mqtt_topic_root: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = hub_settings(
        devstack,
        database_url=f"postgresql://nobody@127.0.0.1:{port}/none",
        redis_url=redis_url,
        root=mqtt_topic_root,
    )
    hub = Hub(settings)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(hub.run()))
    runner.start()
    # Still waiting for the database, not crashed; then a clean stop.
    runner.join(1.0)
    assert runner.is_alive()
    hub.request_stop()
    runner.join(30)
    assert result == [0]
