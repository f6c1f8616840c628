"""Done-when 4: bad commands are never executed; a valid unlock is done once, acked, then seen."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import pytest
from agent_testing import eventually, fast_config, make_agent, parked_car, running

from protocol.acks import decode_ack
from protocol.commands import Action
from protocol.keys import SigningKey
from protocol.signing import CommandSigner
from protocol.topics import Topic
from vehicle_agent.queue import SqliteFixQueue

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from agent_testing import Subscriber

    from devstack.stack import DevStack


def forge(payload: bytes) -> bytes:
    """The same command with its signature altered."""
    token = json.loads(payload)["token"]
    header, body, footer = token.rsplit(".", 2)
    flipped = body[:-2] + ("AA" if body[-2:] != "AA" else "BA")
    return json.dumps({"token": f"{header}.{flipped}.{footer}"}).encode()


def test_only_the_valid_unlock_is_executed_once(
    any_stack: DevStack,
    subscriber: Callable[..., Subscriber],
    mqtt_topic_root: str,
    tmp_path: Path,
) -> None:
    url, root = any_stack.info.mqtt_url, mqtt_topic_root
    hub_key, rogue_key = SigningKey.generate(), SigningKey.generate()
    hub = CommandSigner(hub_key)
    command = Topic.command("car-1", root=root).value
    ack_topic = Topic.ack("car-1", root=root).value
    telemetry = Topic.telemetry("car-1", root=root).value
    watcher = subscriber(url, "watcher").start(ack_topic, telemetry)
    config = fast_config(
        url,
        root,
        parked_interval_s=60,
        trusted_keys=[hub_key.verifying_key.to_paserk()],
        queue_path=tmp_path / "agent.sqlite3",
    )
    fix_queue = SqliteFixQueue(tmp_path / "agent.sqlite3", config.queue_max_fixes)
    agent, car = make_agent(config, parked_car(locked=True), fix_queue)

    unlock = hub.sign("car-1", Action.UNLOCK, ttl_s=60)
    expired = CommandSigner(hub_key, clock=lambda: time.time() - 120).sign(
        "car-1", Action.UNLOCK, ttl_s=60
    )
    other_vehicle = hub.sign("car-2", Action.UNLOCK, ttl_s=60)
    bad = [
        forge(unlock.payload),  # forged signature: dropped, no ack
        CommandSigner(rogue_key).sign("car-1", Action.UNLOCK, ttl_s=60).payload,  # unknown key
        b'{"token": "v4.public.garbage"}',  # malformed
        b"\xff not json",
        expired.payload,  # rejected: expired
        other_vehicle.payload,  # rejected: wrong_vehicle
    ]

    def acks() -> list[dict[str, object]]:
        return [m.json() for m in watcher.on(ack_topic)]

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: agent.stats.fixes_acked >= 1, "the agent online")
            for payload in [*bad, unlock.payload]:
                await asyncio.to_thread(watcher.publish, command, payload)
            await eventually(lambda: len(acks()) >= 3, "three acks")
            await eventually(
                lambda: any(fix["locked"] is False for fix in watcher.fixes(telemetry)),
                "a fix showing the car unlocked",
            )
            # The same command again (QoS 1 redelivery, or a replay): the first ack again.
            await asyncio.to_thread(watcher.publish, command, unlock.payload)
            await eventually(lambda: len(acks()) >= 4, "the repeated ack")

    asyncio.run(scenario())

    received = acks()
    assert [(a["cmd_id"], a["status"], a["reason"]) for a in received[:3]] == [
        (str(expired.cmd_id), "rejected", "expired"),
        (str(other_vehicle.cmd_id), "rejected", "wrong_vehicle"),
        (str(unlock.cmd_id), "done", None),
    ]
    assert received[2]["locked"] is False
    # The repeat is answered with the very bytes of the first ack.
    assert watcher.on(ack_topic)[3].payload == watcher.on(ack_topic)[2].payload
    assert car.performed == [Action.UNLOCK]
    assert not car.status().locked
    assert len(received) == 4
    stats = agent.stats
    assert (stats.commands_executed, stats.commands_rejected, stats.commands_repeated) == (1, 6, 1)
    # Every ack is valid for the reference decoder.
    assert all(decode_ack(m.payload) for m in watcher.on(ack_topic))
    fix_queue.close()


def test_a_command_sent_while_the_car_was_offline_arrives_on_reconnect(
    devstack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    if devstack.info.mqtt_broker != "mosquitto":
        pytest.skip("amqtt queues nothing for a disconnected persistent session")
    url, root = devstack.info.mqtt_url, mqtt_topic_root
    hub_key = SigningKey.generate()
    watcher = subscriber(url, "watcher").start(Topic.ack("car-1", root=root).value)
    config = fast_config(url, root, trusted_keys=[hub_key.verifying_key.to_paserk()])
    agent, car = make_agent(config)

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: agent.stats.connected, "the agent online")
            agent.set_network(False)
            await eventually(lambda: not agent.stats.connected, "the agent offline")
            signed = CommandSigner(hub_key).sign("car-1", Action.UNLOCK, ttl_s=60)
            await asyncio.to_thread(
                watcher.publish, Topic.command("car-1", root=root).value, signed.payload
            )
            agent.set_network(True)
            await eventually(lambda: watcher.on(Topic.ack("car-1", root=root).value), "the ack")

    asyncio.run(scenario())
    assert car.performed == [Action.UNLOCK]
