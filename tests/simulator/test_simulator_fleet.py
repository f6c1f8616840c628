"""The fleet in-process against a real broker: links cut by a scenario, backfill, drain."""

import asyncio

from sim_testing import recorder

from devstack.stack import DevStack
from simulator.area import load_area
from simulator.fleet import Fleet, FleetSettings
from simulator.world import World

# Bounded waits inside the event loop.
WAIT_S = 20.0


async def _until(condition, limit_s: float = WAIT_S) -> None:
    async with asyncio.timeout(limit_s):
        # Agents' counters have no event to wait on: poll them, bounded by the timeout.
        while not condition():  # noqa: ASYNC110 - see above
            await asyncio.sleep(0.05)


def test_a_cut_link_queues_fixes_then_backfills(devstack: DevStack, mqtt_topic_root: str) -> None:
    url = devstack.info.mqtt_url
    ids = ["car-a", "car-b", "car-c"]
    world = World(load_area("shanghai").network, len(ids), seed=1)
    settings = FleetSettings(
        vehicle_ids=ids,
        mqtt_urls=[url] * len(ids),
        topic_root=mqtt_topic_root,
        client_prefix=f"{mqtt_topic_root}-",
        rate_hz=2.0,
        parked_rate_hz=2.0,
    )
    fleet = Fleet(world, settings)

    async def scenario() -> None:
        stop = asyncio.Event()
        run = asyncio.create_task(fleet.run(stop))
        await _until(lambda: fleet.snapshot().connected == len(ids))
        assert world.on_network is not None
        world.on_network(0, False)  # what offline-burst and flaky-network do
        cut = fleet.agents[0]
        await _until(lambda: not cut.stats.connected)
        queued = cut.stats.fixes_enqueued
        await _until(lambda: cut.stats.queue_depth >= 3)  # still taking fixes, offline
        assert fleet.agents[1].stats.connected
        world.on_network(0, True)
        await _until(lambda: cut.stats.connected and cut.stats.queue_depth == 0)
        assert cut.stats.fixes_enqueued > queued
        stop.set()
        outcome = await asyncio.wait_for(run, WAIT_S)
        assert outcome.broker_reachable
        assert outcome.undrained == 0

    with recorder(url, mqtt_topic_root) as seen:
        asyncio.run(scenario())
        snap = fleet.snapshot()
        unique = seen.unique()
        assert snap.unique_acked == snap.fixes_enqueued
        # The cut car's backlog came as arrays; every car's fixes arrived, each counted once.
        for agent, queue in zip(fleet.agents, fleet.queues, strict=True):
            vid = agent.config.vehicle_id
            assert len({seq for v, seq in unique if v == vid}) == queue.unique_acked
