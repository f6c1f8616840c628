"""Command dispatch end to end: the database library, hubs, a real broker and real agents."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from hub_testing import WAIT_S, hub_env, hub_settings, running_hub, seed_vehicles, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from db.commands import (
    CommandStatus,
    InvalidCommandError,
    RetiredVehicleError,
    UnknownVehicleError,
    issue_command,
    wait_for_command,
)
from hub.consumer import PublishTicket
from hub.dispatcher import CommandDispatcher
from hub.stats import HubStats
from protocol.broker_url import BrokerUrl
from protocol.commands import Action
from protocol.keys import SigningKey
from protocol.signing import CommandSigner, CommandVerifier
from vehicle_agent.agent import Agent
from vehicle_agent.backends.sim import SimCar
from vehicle_agent.config import AgentConfig
from vehicle_agent.queue import MemoryFixQueue

if TYPE_CHECKING:
    import uuid
    from collections.abc import Iterator

    from devstack.stack import DevStack
    from hub.settings import HubSettings

# Agent intervals fast enough that confirmation follows within a fraction of a second.
FAST_AGENT = {
    "parked_interval_s": 0.2,
    "moving_interval_s": 0.2,
    "sample_interval_s": 0.05,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "keepalive_s": 5,
}


class AgentThread:
    """A real vehicle agent on a simulated car, running its event loop on its own thread."""

    def __init__(self, stack: DevStack, root: str, vehicle_id: str, key: SigningKey) -> None:
        self.car = SimCar(lat=31.2304, lon=121.4737, heading=90.0, locked=True)
        self.config = AgentConfig.load(
            None,
            vehicle_id=vehicle_id,
            mqtt_url=stack.info.mqtt_url,
            topic_root=root,
            client_id=f"{root}-{vehicle_id}",
            trusted_keys=[key.verifying_key.to_paserk()],
            **FAST_AGENT,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> AgentThread:
        agent = Agent(
            self.config,
            position=self.car,
            status=self.car,
            actuator=self.car,
            queue=MemoryFixQueue(self.config.queue_max_fixes),
        )

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()  # type: ignore[assignment]
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):
                await agent.run()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert self._started.wait(WAIT_S)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._task is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(WAIT_S)
            self._thread = None


@contextlib.contextmanager
def running_agent(
    stack: DevStack, root: str, vehicle_id: str, key: SigningKey
) -> Iterator[AgentThread]:
    agent = AgentThread(stack, root, vehicle_id, key).start()
    try:
        yield agent
    finally:
        agent.stop()
        clear_retained_status(stack, root, vehicle_id)


def clear_retained_status(stack: DevStack, root: str, vehicle_id: str) -> None:
    """Delete the car's retained status: amqtt hands retained messages to subscribers of
    other roots too, and later tests count what their hub receives."""
    broker = BrokerUrl.parse(stack.info.mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{root}-cleaner")
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(f"{root}/{vehicle_id}/status", b"", qos=1, retain=True)
        info.wait_for_publish(WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()


class CommandRecorder:
    """Subscribes to every vehicle's command topic under a root and counts what arrives."""

    def __init__(self, stack: DevStack, root: str, key: SigningKey) -> None:
        broker = BrokerUrl.parse(stack.info.mqtt_url)
        self._key = key
        self.received: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{root}-recorder")
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = lambda _c, _u, m: self.received.append((m.topic, m.payload))
        self._client.connect(broker.host, broker.port)
        self._client.subscribe(f"{root}/+/cmd", qos=1)
        self._client.loop_start()
        assert self._subscribed.wait(WAIT_S)

    def command_ids(self) -> Counter[uuid.UUID]:
        """How often each command id arrived (verified with the hub's key)."""
        counts: Counter[uuid.UUID] = Counter()
        for topic, payload in list(self.received):
            vehicle_id = topic.split("/")[1]
            claims = CommandVerifier([self._key.verifying_key], vehicle_id).verify(payload)
            counts[claims.cmd_id] += 1
        return counts

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def command_row(url: str, command_id: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM vehicle_commands WHERE id = %s", (command_id,)).fetchone()
    assert row is not None
    return row


def issue(url: str, vehicle_id: str, action: Action, *, ttl_s: int = 30) -> uuid.UUID:
    with psycopg.connect(url) as conn:
        command = issue_command(conn, vehicle_id, action, issued_by="test", ttl_s=ttl_s)
    return command.id


def signed_settings(
    stack: DevStack, url: str, redis_url: str, root: str, key: SigningKey, **overrides: Any
) -> HubSettings:
    return hub_settings(
        stack,
        database_url=url,
        redis_url=redis_url,
        root=root,
        hub_signing_key=key.to_paserk(),
        hub_command_sweep_s=0.2,
        **overrides,
    )


def test_unlock_reaches_confirmed_through_the_real_agent(
    any_stack: DevStack, migrated_database_url: str, redis_url: str, mqtt_topic_root: str
) -> None:
    url, root, key = migrated_database_url, mqtt_topic_root, SigningKey.generate()
    car_id = f"{root}-car"
    seed_vehicles(url, [car_id])
    settings = signed_settings(any_stack, url, redis_url, root, key)
    with running_hub(settings) as hub, running_agent(any_stack, root, car_id, key) as agent:
        with psycopg.connect(url, autocommit=True) as conn:
            queued = issue_command(
                conn, car_id, Action.UNLOCK, issued_by="user:rider-1", reason="trip start"
            )
            seen: list[str] = []
            done = wait_for_command(
                conn, queued.id, timeout_s=WAIT_S, on_change=lambda c: seen.append(c.status)
            )
        assert done.status == CommandStatus.CONFIRMED, done
        assert agent.car.status().locked is False
        # The waiter sees the statuses in order (a fast hub may be past `queued` already).
        order = list(CommandStatus)
        assert seen == sorted(seen, key=order.index)
        assert seen[-1] == CommandStatus.CONFIRMED
        # The row is the audit trail: who asked, which hub sent it with which key, and when.
        assert done.issued_by == "user:rider-1"
        assert done.reason == "trip start"
        assert done.sent_by == settings.hub_client_id
        assert done.key_id == key.key_id
        assert done.sent_at is not None
        assert done.acked_at is not None
        assert done.confirmed_at is not None
        assert done.finished_at is not None
        assert done.created_at <= done.sent_at <= done.acked_at <= done.confirmed_at
        assert hub.stats.commands_sent == 1
        # The waiter hears the commit; the writer counts right after it.
        wait_until(lambda: hub.stats.commands_confirmed == 1, what="the confirmation counted")


def test_freecar_command_locks_and_waits(
    devstack: DevStack, migrated_database_url: str, redis_url: str, mqtt_topic_root: str
) -> None:
    url, root, key = migrated_database_url, mqtt_topic_root, SigningKey.generate()
    car_id = f"{root}-car"
    seed_vehicles(url, [car_id])
    settings = signed_settings(devstack, url, redis_url, root, key)
    with running_hub(settings), running_agent(devstack, root, car_id, key) as agent:
        agent.car.update(locked=False)
        result = subprocess.run(
            [sys.executable, "-m", "freecar", "command", car_id, "lock", "--wait", "--json"],
            env=hub_env(settings),
            capture_output=True,
            text=True,
            timeout=WAIT_S * 2,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["status"] == "confirmed"
    assert row["action"] == "lock"
    assert row["issued_by"].startswith("operator:")
    assert agent.car.status().locked is True


def test_freecar_command_refuses_an_unknown_vehicle(
    devstack: DevStack, migrated_database_url: str
) -> None:
    env = {"FREECAR_DATABASE_URL": migrated_database_url, "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "freecar", "command", "no-such-car", "unlock"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown_vehicle" in result.stderr


def test_a_command_past_its_ttl_is_never_sent(
    devstack: DevStack, migrated_database_url: str, redis_url: str, mqtt_topic_root: str
) -> None:
    url, root, key = migrated_database_url, mqtt_topic_root, SigningKey.generate()
    car_id = f"{root}-car"
    seed_vehicles(url, [car_id])
    # Issued while no hub runs; by the time one starts, it has too little life left.
    command_id = issue(url, car_id, Action.UNLOCK, ttl_s=5)
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE vehicle_commands SET expires_at = now() + interval '1 second' WHERE id = %s",
            (command_id,),
        )
    recorder = CommandRecorder(devstack, root, key)
    try:
        settings = signed_settings(devstack, url, redis_url, root, key)
        with running_hub(settings), running_agent(devstack, root, car_id, key) as agent:
            wait_until(
                lambda: command_row(url, command_id)["status"] == "expired",
                what="the stale command to expire",
            )
            # A later command goes through: the car was listening all along.
            later = issue(url, car_id, Action.HONK)
            wait_until(
                lambda: command_row(url, later)["status"] == "acked", what="the honk to be acked"
            )
            assert agent.car.status().locked is True
        row = command_row(url, command_id)
        assert row["outcome_reason"] == "not_sent_in_time"
        assert row["sent_at"] is None
        assert set(recorder.command_ids()) == {later}
    finally:
        recorder.close()


def test_a_command_for_an_offline_car_expires_and_never_runs(
    devstack: DevStack, migrated_database_url: str, redis_url: str, mqtt_topic_root: str
) -> None:
    url, root, key = migrated_database_url, mqtt_topic_root, SigningKey.generate()
    car_id = f"{root}-car"
    seed_vehicles(url, [car_id])
    settings = signed_settings(devstack, url, redis_url, root, key, hub_command_answer_grace_s=0.0)
    agent = AgentThread(devstack, root, car_id, key)
    with running_hub(settings):
        # The car has been online (its broker session exists), then goes away.
        agent.start()
        wait_until(lambda: last_seen(url, car_id) is not None, what="the car's first fix")
        agent.stop()
        command_id = issue(url, car_id, Action.UNLOCK, ttl_s=5)
        wait_until(lambda: command_row(url, command_id)["status"] == "sent", what="sending")
        wait_until(
            lambda: command_row(url, command_id)["status"] == "expired",
            what="the unanswered command to expire",
        )
        assert command_row(url, command_id)["outcome_reason"] == "no_answer_in_time"
        # The car comes back after the TTL: whatever the broker still holds, it must not act.
        seen_before = last_seen(url, car_id)
        agent.start()
        wait_until(lambda: last_seen(url, car_id) > seen_before, what="the car to report again")
        agent.stop()
        clear_retained_status(devstack, root, car_id)
    assert agent.car.status().locked is True
    assert command_row(url, command_id)["status"] == "expired"


def last_seen(url: str, vehicle_id: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT last_seen_at FROM vehicle_state WHERE vehicle_id = %s", (vehicle_id,)
        ).fetchone()
    return row[0] if row else None


def test_two_hubs_send_each_command_once(
    devstack: DevStack, migrated_database_url: str, redis_url: str, mqtt_topic_root: str
) -> None:
    url, root, key = migrated_database_url, mqtt_topic_root, SigningKey.generate()
    cars = [f"{root}-c{i}" for i in range(5)]
    seed_vehicles(url, cars)
    recorder = CommandRecorder(devstack, root, key)
    try:
        first = signed_settings(devstack, url, redis_url, root, key, hub_client_id=f"{root}-a")
        second = signed_settings(devstack, url, redis_url, root, key, hub_client_id=f"{root}-b")
        with running_hub(first) as hub_a, running_hub(second) as hub_b:
            ids: list[uuid.UUID] = []
            for _ in range(3):
                # One transaction per burst: one NOTIFY wakes both hubs at the same moment.
                with psycopg.connect(url) as conn:
                    ids += [
                        issue_command(conn, car, Action.HONK, issued_by="test").id
                        for car in cars
                        for _ in range(20)
                    ]
            wait_until(
                lambda: hub_a.stats.commands_sent + hub_b.stats.commands_sent >= len(ids),
                what="every command sent",
            )
            wait_until(lambda: len(recorder.received) >= len(ids), what="every command received")
            # Give a stray second send the time to arrive before counting.
            time.sleep(0.5)
        counts = recorder.command_ids()
        assert set(counts) == set(ids)
        assert max(counts.values()) == 1
        assert hub_a.stats.commands_sent + hub_b.stats.commands_sent == len(ids)
        with psycopg.connect(url) as conn:
            senders = dict(
                conn.execute(
                    "SELECT sent_by, count(*) FROM vehicle_commands"
                    " WHERE status = 'sent' GROUP BY sent_by"
                ).fetchall()
            )
        assert sum(senders.values()) == len(ids)
        assert set(senders) <= {first.hub_client_id, second.hub_client_id}
    finally:
        recorder.close()


def test_commands_the_broker_does_not_take_go_back_to_the_queue(
    migrated_database_url: str, redis_url: str, mqtt_topic_root: str
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    car_id = f"{root}-car"
    seed_vehicles(url, [car_id])
    command_id = issue(url, car_id, Action.LOCK)
    attempts: list[str] = []

    def refusing_broker(topic: str, _payload: bytes, _expiry_s: int) -> PublishTicket:
        attempts.append(topic)
        ticket = PublishTicket()
        ticket.resolve(accepted=False, error="not authorized")
        return ticket

    stats = HubStats()
    dispatcher = CommandDispatcher(
        database_url=url,
        hub_id=f"{root}-hub",
        root=root,
        signer=CommandSigner(SigningKey.generate()),
        publish=refusing_broker,
        connected=lambda: True,
        stats=stats,
        sweep_s=0.1,
        publish_timeout_s=1.0,
        min_remaining_s=2,
        answer_grace_s=10.0,
        redis_url=redis_url,
    )
    dispatcher.start()
    try:
        wait_until(lambda: stats.commands_send_failed >= 2, what="two refused attempts")
    finally:
        assert dispatcher.close(WAIT_S)
    row = command_row(url, command_id)
    assert row["status"] == "queued"
    assert row["sent_at"] is None
    assert row["sent_by"] is None
    assert stats.commands_sent == 0
    assert attempts[0] == f"{root}/{car_id}/cmd"


def test_issuing_checks_the_vehicle_and_the_ttl(migrated_database_url: str) -> None:
    url = migrated_database_url
    seed_vehicles(url, ["retired-car", "good-car"])
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE vehicles SET status = 'retired' WHERE id = 'retired-car'")
        with pytest.raises(UnknownVehicleError):
            issue_command(conn, "ghost", Action.LOCK, issued_by="test")
        with pytest.raises(RetiredVehicleError):
            issue_command(conn, "retired-car", Action.LOCK, issued_by="test")
        with pytest.raises(InvalidCommandError, match="ttl_s"):
            issue_command(conn, "good-car", Action.LOCK, issued_by="test", ttl_s=2)


def test_waiting_gives_up_after_the_timeout(migrated_database_url: str) -> None:
    url = migrated_database_url
    seed_vehicles(url, ["waiting-car"])
    with psycopg.connect(url, autocommit=True) as conn:
        command = issue_command(conn, "waiting-car", Action.LOCK, issued_by="test")
        started = time.monotonic()
        still = wait_for_command(conn, command.id, timeout_s=0.3)
        assert time.monotonic() - started >= 0.3
    assert still.status == CommandStatus.QUEUED
    assert not still.finished
