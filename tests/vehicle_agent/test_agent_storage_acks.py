"""Contract 1.1 over a real broker: fixes wait for the hub's word, which the test plays.

The test's service login publishes the retained `stored` messages a hub would, so each
rule (keep until covered, send again after a reconnect or a gap, the window, the fallback
for hubs that predate storage acknowledgements) is seen from outside the agent.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from agent_testing import eventually, fast_config, make_agent, running

from protocol.stored import Stored, encode_stored
from protocol.topics import Topic
from vehicle_agent.queue import SqliteFixQueue

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from agent_testing import Subscriber

    from devstack.stack import DevStack
    from vehicle_agent.agent import Agent

# Fixes the agent takes after reconnecting before the test stops looking: enough to show
# that live reporting resumed alongside the backlog.
MORE_FIXES = 10


def held_seqs(agent: Agent) -> list[int]:
    return [fix.seq for fix in agent.queue.read(limit=10_000)]


def say_stored(
    hub: Subscriber, agent: Agent, next_seq: int, *, queue_id: int | None = None
) -> None:
    """Publish what a hub publishes once every seq below `next_seq` is handled."""
    message = Stored(queue_id=queue_id or agent.queue.queue_id, next_seq=next_seq, ts=1)
    topic = Topic.stored(agent.config.vehicle_id, root=agent.config.topic_root).value
    hub.publish(topic, encode_stored(message), retain=True)


def test_fixes_stay_queued_until_the_hub_says_it_stored_them(
    any_stack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = any_stack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    hub = subscriber(url, "hub").start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root))

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: len(hub.seqs(telemetry)) >= 6, "six fixes at the hub")
            # The broker has them all; none has left the queue.
            assert held_seqs(agent)[:6] == [0, 1, 2, 3, 4, 5]
            assert agent.stats.awaiting_hub >= 6
            assert agent.stats.fixes_confirmed == 0
            say_stored(hub, agent, 4)
            await eventually(lambda: agent.queue.confirmed_next == 4, "the confirmation")
            assert held_seqs(agent)[0] == 4
            assert agent.stats.fixes_confirmed == 4
            assert agent.stats.storage_acks == "hub"

    asyncio.run(scenario())
    assert all(fix["queue_id"] == agent.queue.queue_id for fix in hub.fixes(telemetry))


def test_a_broker_kill_loses_no_fix_the_hub_never_confirmed(
    any_stack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    """Issue 12, item 7: fixes acknowledged by a broker that then died go again.

    No hub answers here, so nothing is confirmed: every fix taken before the kill, its
    PUBACK or not, reaches the subscriber that listens after it. A contract 1.0 agent
    dropped each fix at its PUBACK, and a `kill -9` of Mosquitto lost what it had not saved.
    """
    url = any_stack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    before = subscriber(url, "before").start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root))

    async def scenario() -> int:
        async with running(agent):
            await eventually(lambda: len(before.seqs(telemetry)) >= 10, "fixes before")
            acked_before_kill = max(before.seqs(telemetry))
            await asyncio.to_thread(any_stack.mqtt.kill)
            await eventually(lambda: not agent.stats.connected, "the agent noticing")
            agent.set_network(False)
            await asyncio.to_thread(any_stack.mqtt.start)
            after = await asyncio.to_thread(subscriber(url, "after").start, telemetry)
            agent.set_network(True)
            await eventually(
                lambda: set(range(acked_before_kill + 1)) <= after.seqs(telemetry),
                "every fix acknowledged by the killed broker, again",
            )
            return acked_before_kill

    assert asyncio.run(scenario()) >= 9


def test_fixes_the_broker_took_before_a_kill_go_again_unless_confirmed(
    any_stack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    """Issue 12, item 7 on the car's side: a broker's PUBACK no longer lets a fix go."""
    url = any_stack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    before = subscriber(url, "before").start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root))

    async def scenario() -> tuple[int, int]:
        async with running(agent):
            await eventually(lambda: len(before.seqs(telemetry)) >= 10, "fixes before")
            say_stored(before, agent, 3)
            await eventually(lambda: agent.queue.confirmed_next == 3, "the confirmation")
            acked_before_kill = max(before.seqs(telemetry))
            await asyncio.to_thread(any_stack.mqtt.kill)
            await eventually(lambda: not agent.stats.connected, "the agent noticing")
            # Hold the agent back until a new subscriber listens: neither broker keeps a
            # clean subscriber's subscription across a kill.
            agent.set_network(False)
            await asyncio.to_thread(any_stack.mqtt.start)
            after = await asyncio.to_thread(subscriber(url, "after").start, telemetry)
            agent.set_network(True)
            await eventually(lambda: agent.stats.reconnects >= 1, "the agent reconnecting")
            resumed = agent.queue.last_seq or 0
            await eventually(
                lambda: (agent.queue.last_seq or 0) >= resumed + MORE_FIXES, "fixes after"
            )
            last = agent.queue.last_seq or 0
            await eventually(
                lambda: set(range(3, last + 1)) <= after.seqs(telemetry), "every unconfirmed seq"
            )
            assert not set(range(3)) & after.seqs(telemetry), "confirmed fixes went again"
            return acked_before_kill, last

    acked_before_kill, last = asyncio.run(scenario())
    # Fixes 3 and on had their PUBACK before the kill; a contract 1.0 agent dropped them then.
    assert acked_before_kill >= 9
    assert last > acked_before_kill


def test_an_agent_restart_sends_again_only_what_the_retained_word_does_not_cover(
    devstack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str, tmp_path: Path
) -> None:
    url = devstack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    hub = subscriber(url, "hub").start(telemetry)
    config = fast_config(url, mqtt_topic_root, queue_path=tmp_path / "agent.sqlite3")
    queue = SqliteFixQueue(tmp_path / "agent.sqlite3", config.queue_max_fixes)
    agent, _ = make_agent(config, fix_queue=queue)

    async def first_run() -> int:
        async with running(agent):
            await eventually(lambda: len(hub.seqs(telemetry)) >= 8, "fixes")
            agent.set_network(False)  # what the hub hears next comes after the restart
            await eventually(lambda: not agent.stats.connected, "the link down")
        # Said while the agent was away: the broker keeps it for the agent, retained.
        say_stored(hub, agent, 5)
        return agent.queue.last_seq or 0

    last = asyncio.run(first_run())
    queue.close()
    hub.messages.clear()
    again = SqliteFixQueue(tmp_path / "agent.sqlite3", config.queue_max_fixes)
    restarted, _ = make_agent(config, fix_queue=again)

    async def second_run() -> None:
        async with running(restarted):
            await eventually(lambda: again.confirmed_next == 5, "the retained confirmation")
            await eventually(
                lambda: set(range(5, last + 1)) <= hub.seqs(telemetry), "the unconfirmed fixes"
            )

    asyncio.run(second_run())
    again.close()
    assert again.queue_id == queue.queue_id
    # Depending on whether the retained word or the first backlog message came first, 0..4
    # may have gone once more; what matters is that nothing from 5 on was missing.
    assert min(hub.seqs(telemetry)) <= 5


def test_the_unconfirmed_window_holds_the_sender_back_until_the_hub_confirms(
    devstack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = devstack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    hub = subscriber(url, "hub").start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root, unconfirmed_window=3))
    # Retained before the agent connects: it knows from the start that the hub answers,
    # so the window applies to its very first messages.
    say_stored(hub, agent, 0)

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: agent.stats.fixes_acked == 3, "a full window")
            await eventually(lambda: (agent.queue.last_seq or 0) >= 8, "more fixes taken")
            assert agent.stats.fixes_acked == 3, "sent beyond the window"
            assert agent.stats.queue_depth >= 6  # taken, waiting to be sent
            say_stored(hub, agent, 3)
            await eventually(lambda: agent.stats.fixes_acked >= 6, "sending resumed")

    asyncio.run(scenario())
    # The window's first three, then the ones it held back.
    assert {fix["seq"] for fix in hub.fixes(telemetry)[:3]} == {0, 1, 2}


def test_a_fix_lost_on_the_way_is_sent_again_without_reconnecting(
    devstack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = devstack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    hub = subscriber(url, "hub").start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root, resend_after_s=0.3))

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: len(hub.seqs(telemetry)) >= 10, "fixes")
            # The hub stored 0 and 1 and waits for 2, which the broker took a second ago.
            say_stored(hub, agent, 2)
            await eventually(lambda: agent.stats.resends == 1, "the agent sending again")
            await eventually(lambda: counts(hub.fixes(telemetry)).get(2, 0) >= 2, "seq 2 again")

    asyncio.run(scenario())
    assert agent.stats.reconnects == 0
    resent = [m for m in hub.on(telemetry) if m.payload.startswith(b"[")]
    assert resent, "sent again as backlog arrays"


def counts(fixes: list[dict[str, Any]]) -> dict[int, int]:
    found: dict[int, int] = {}
    for fix in fixes:
        found[fix["seq"]] = found.get(fix["seq"], 0) + 1
    return found


def test_without_an_answering_hub_auto_falls_back_to_broker_acks_and_back(
    devstack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = devstack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    hub = subscriber(url, "hub").start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root, hub_ack_timeout_s=0.5))

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: agent.stats.storage_acks == "broker", "the fallback")
            # Nothing is held for a hub that does not answer, and nothing is sent twice.
            await eventually(lambda: agent.stats.awaiting_hub == 0, "the queue let go")
            await eventually(lambda: len(agent.queue) <= 1, "the queue drained")
            say_stored(hub, agent, agent.queue.last_seq or 0)
            await eventually(lambda: agent.stats.storage_acks == "hub", "hub acks again")
            await eventually(lambda: agent.stats.awaiting_hub >= 2, "fixes held again")

    asyncio.run(scenario())
    assert agent.stats.reconnects == 0


def test_a_full_queue_tells_the_hub_the_lowest_seq_it_still_holds(
    devstack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = devstack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    hub = subscriber(url, "hub").start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root, queue_max_fixes=5))

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: hub.seqs(telemetry), "a first fix")
            say_stored(hub, agent, 1)
            await eventually(lambda: agent.queue.confirmed_next == 1, "the confirmation")
            agent.set_network(False)
            await eventually(lambda: agent.stats.queue_dropped >= 3, "a full queue dropping")
            agent.set_network(True)
            last = agent.queue.last_seq or 0
            await eventually(lambda: last in hub.seqs(telemetry), "the backlog")

    asyncio.run(scenario())
    floors = [fix.get("queue_floor") for fix in hub.fixes(telemetry)]
    dropped_at = next(fix["seq"] for fix in hub.fixes(telemetry) if fix.get("queue_dropped"))
    with_floor = [fix for fix in hub.fixes(telemetry) if fix["seq"] >= dropped_at]
    assert all(fix["queue_floor"] > 1 for fix in with_floor)
    assert all(fix["queue_floor"] <= fix["seq"] for fix in with_floor)
    assert floors[0] is None  # nothing dropped yet: the hub needs no telling


def test_an_older_queues_retained_word_removes_nothing(
    devstack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = devstack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    hub = subscriber(url, "hub").start(telemetry)
    agent, _ = make_agent(fast_config(url, mqtt_topic_root))
    older = agent.queue.queue_id % (2**31 - 1) + 1  # any other id

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: len(hub.seqs(telemetry)) >= 5, "fixes")
            # The queue a replaced unit (or a lost file) had, far ahead of this new counter.
            say_stored(hub, agent, 1_000_000, queue_id=older)
            say_stored(hub, agent, 2)
            await eventually(lambda: agent.queue.confirmed_next == 2, "this queue's word")

    asyncio.run(scenario())
    assert held_seqs(agent)[0] == 2
