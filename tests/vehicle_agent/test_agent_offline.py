"""Store and forward over a real broker: an offline burst, a full queue, the backfill."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from agent_testing import eventually, fast_config, make_agent, running

from protocol.status import decode_status
from protocol.telemetry import decode_telemetry
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent_testing import Subscriber

    from devstack.stack import DevStack

MAX_FIXES = 20
BATCH = 8


def test_an_offline_burst_is_backfilled_in_batches_with_drops_reported(
    any_stack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = any_stack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    status = Topic.status("car-1", root=mqtt_topic_root).value
    watcher = subscriber(url, "watcher").start(telemetry, status)
    config = fast_config(
        url,
        mqtt_topic_root,
        queue_max_fixes=MAX_FIXES,
        backlog_batch_size=BATCH,
        # Quicker than the other tests: thirty fixes to fill the queue and overflow it.
        parked_interval_s=0.02,
        moving_interval_s=0.02,
        sample_interval_s=0.01,
        # No hub here to confirm storage: fixes leave at the broker's PUBACK (contract 1.0).
        # With a hub, see test_agent_storage_acks.py.
        storage_acks="broker",
    )
    agent, _ = make_agent(config)

    async def scenario() -> int:
        async with running(agent):
            await eventually(lambda: agent.stats.connected, "the agent online")
            agent.set_network(False)
            # The link is cut, not closed: the broker publishes the last will.
            await eventually(lambda: len(watcher.on(status)) >= 2, "the last will")
            await eventually(lambda: agent.stats.queue_dropped >= 10, "a full queue dropping")
            newest_offline = agent.queue.last_seq or 0
            agent.set_network(True)
            await eventually(
                lambda: (
                    set(range(newest_offline - MAX_FIXES + 2, newest_offline + 1))
                    <= watcher.seqs(telemetry)
                ),
                "the surviving backlog",
            )
            return newest_offline

    newest_offline = asyncio.run(scenario())
    onlines = [decode_status(m.payload).online for m in watcher.on(status)]
    assert onlines[:3] == [True, False, True]
    messages = watcher.on(telemetry)
    arrays = [m for m in messages if m.payload.startswith(b"[")]
    assert arrays, "the backlog goes as JSON arrays"
    for message in arrays:
        batch = decode_telemetry(message.payload)
        assert 1 <= len(batch) <= BATCH
        assert [fix.seq for fix in batch] == sorted(fix.seq for fix in batch)
    fixes = watcher.fixes(telemetry)
    assert agent.stats.queue_dropped >= 10
    # Fixes taken once the queue had dropped some say so; the counter only grows.
    late = [fix for fix in fixes if fix["seq"] == newest_offline]
    assert late[0]["queue_dropped"] >= 1
    counts = [fix.get("queue_dropped", 0) for fix in sorted(fixes, key=lambda f: f["seq"])]
    assert counts == sorted(counts)
