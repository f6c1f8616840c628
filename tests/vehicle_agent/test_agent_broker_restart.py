"""Done-when 2: a broker restart or kill mid-run loses no `seq` (duplicates are allowed)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from agent_testing import eventually, fast_config, make_agent, running

from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent_testing import Subscriber

    from devstack.stack import DevStack

# Fixes the agent takes after reconnecting before the test stops looking: enough to show
# that live reporting resumed alongside the backlog.
MORE_FIXES = 10


def missing(expected: range, received: set[int]) -> list[int]:
    return sorted(set(expected) - received)


def test_a_broker_restart_loses_no_seq(
    any_stack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    if any_stack.info.mqtt_broker != "mosquitto":
        pytest.skip(
            "amqtt forgets sessions and queued messages on restart, so a subscriber away "
            "during the restart misses messages whatever the agent does; the kill test below "
            "checks on amqtt what the agent itself re-sends"
        )
    url = any_stack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    # A persistent session: mosquitto keeps what arrives for it while it reconnects.
    watcher = subscriber(url, "watcher", clean_session=False).start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root))

    async def scenario() -> int:
        async with running(agent):
            await eventually(lambda: len(watcher.seqs(telemetry)) >= 10, "fixes before")
            await asyncio.to_thread(any_stack.mqtt.restart)
            await eventually(lambda: agent.stats.reconnects >= 1, "the agent reconnecting")
            after = agent.queue.last_seq or 0
            await eventually(
                lambda: (agent.queue.last_seq or 0) >= after + MORE_FIXES, "fixes after"
            )
            last = agent.queue.last_seq or 0
            await eventually(
                lambda: not missing(range(last + 1), watcher.seqs(telemetry)),
                "every seq up to the last one",
            )
            return last

    last = asyncio.run(scenario())
    assert not missing(range(last + 1), watcher.seqs(telemetry))


def test_every_fix_unacked_when_the_broker_was_killed_is_resent(
    any_stack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = any_stack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    before = subscriber(url, "before").start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root))
    outage_fixes = 5

    async def scenario() -> tuple[int, int]:
        async with running(agent):
            await eventually(lambda: len(before.seqs(telemetry)) >= 10, "fixes before")
            await asyncio.to_thread(any_stack.mqtt.kill)
            await eventually(lambda: not agent.stats.connected, "the agent noticing")
            # Hold the agent back until a new subscriber listens: neither broker keeps a
            # clean subscriber's subscription across a kill.
            agent.set_network(False)
            await eventually(lambda: len(agent.queue) >= outage_fixes, "fixes during the outage")
            await asyncio.to_thread(any_stack.mqtt.start)
            after = await asyncio.to_thread(subscriber(url, "after").start, telemetry)
            first_unacked = agent.queue.read(limit=1)[0].seq
            agent.set_network(True)
            await eventually(lambda: agent.stats.reconnects >= 1, "the agent reconnecting")
            resumed = agent.queue.last_seq or 0
            await eventually(
                lambda: (agent.queue.last_seq or 0) >= resumed + MORE_FIXES, "fixes after"
            )
            last = agent.queue.last_seq or 0
            await eventually(
                lambda: not missing(range(first_unacked, last + 1), after.seqs(telemetry)),
                "every unacked and later seq",
            )
            return first_unacked, last

    first_unacked, last = asyncio.run(scenario())
    # What the first subscriber got and what was re-sent meet: nothing in between is lost.
    assert first_unacked <= max(before.seqs(telemetry)) + 1
    assert agent.stats.queue_dropped == 0
    assert last - first_unacked >= outage_fixes + MORE_FIXES - 1
