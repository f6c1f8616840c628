"""Done-when 1: what a plain subscriber sees follows the contract field for field (both brokers)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from agent_testing import eventually, fast_config, make_agent, parked_car, running

from protocol.status import decode_status
from protocol.telemetry import decode_telemetry
from protocol.topics import Topic
from vehicle_agent.backends.sim import distance_km

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent_testing import Subscriber

    from devstack.stack import DevStack

LAT, LON = 31.2304, 121.4737


def test_fixes_and_status_follow_the_contract(
    any_stack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = any_stack.info.mqtt_url
    root = mqtt_topic_root
    telemetry = Topic.telemetry("car-1", root=root).value
    status = Topic.status("car-1", root=root).value
    watcher = subscriber(url, "watcher").start(f"{root}/#")
    # Long intervals: only the fixes this test provokes are taken.
    config = fast_config(url, root, parked_interval_s=60, moving_interval_s=30)
    car = parked_car(fuel_pct=63.5, odometer_km=12345.6)
    agent, _ = make_agent(config, car)
    started_ms = int(time.time() * 1000)

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: watcher.seqs(telemetry) == {0}, "the first fix")
            # One synchronous step: the agent samples between awaits only.
            car.update(engine_on=True, locked=False)
            car.move_to(LAT + 0.001, LON, 42.5, 271.3, accuracy_m=4.2)
            await eventually(lambda: 1 in watcher.seqs(telemetry), "the driving fix")
            car.lose_fix()
            car.update(doors_open=True, engine_on=False, alarm=True)
            await eventually(lambda: 2 in watcher.seqs(telemetry), "the status-only fix")
        await eventually(lambda: len(watcher.on(status)) >= 2, "the offline status")

    asyncio.run(scenario())

    payloads = [m.payload for m in watcher.on(telemetry)]
    assert all(b" " not in payload for payload in payloads), "compact JSON"
    fixes = watcher.fixes(telemetry)
    assert [fix["seq"] for fix in fixes] == [0, 1, 2]
    stamps = [fix["ts"] for fix in fixes]
    assert stamps == sorted(set(stamps))
    assert started_ms - 1000 <= stamps[0] <= int(time.time() * 1000)
    assert all(isinstance(ts, int) for ts in stamps)

    assert fixes[0] == {
        "v": 1,
        "seq": 0,
        "ts": stamps[0],
        "lat": LAT,
        "lon": LON,
        "speed_kmh": 0.0,
        "heading": 90.0,
        "odometer_km": 12345.6,
        "fuel_pct": 63.5,
        "locked": True,
        "doors_open": False,
        "engine_on": False,
        "alarm": False,
        # Contract 1.1: the queue the seqs come from, for the hub's storage acks.
        "queue_id": agent.queue.queue_id,
    }
    driven = distance_km(LAT, LON, LAT + 0.001, LON)
    assert fixes[1] == {
        "v": 1,
        "seq": 1,
        "ts": stamps[1],
        "lat": LAT + 0.001,
        "lon": LON,
        "speed_kmh": 42.5,
        "heading": 271.3,
        "odometer_km": pytest.approx(12345.6 + driven),
        "fuel_pct": 63.5,
        "locked": False,
        "doors_open": False,
        "engine_on": True,
        "alarm": False,
        "accuracy_m": 4.2,
        "queue_id": agent.queue.queue_id,
    }
    assert fixes[2] == {
        "v": 1,
        "seq": 2,
        "ts": stamps[2],
        "lat": None,
        "lon": None,
        "speed_kmh": None,
        "heading": None,
        "odometer_km": pytest.approx(12345.6 + driven),
        "fuel_pct": 63.5,
        "locked": False,
        "doors_open": True,
        "engine_on": False,
        "alarm": True,
        "queue_id": agent.queue.queue_id,
    }
    # The reference decoder accepts every message as sent.
    assert [fix.seq for payload in payloads for fix in decode_telemetry(payload)] == [0, 1, 2]

    statuses = [decode_status(m.payload) for m in watcher.on(status)]
    assert [s.online for s in statuses] == [True, False]
    assert all(s.ts >= started_ms - 1000 for s in statuses)


def test_the_status_is_retained_for_late_subscribers(
    any_stack: DevStack, subscriber: Callable[..., Subscriber], mqtt_topic_root: str
) -> None:
    url = any_stack.info.mqtt_url
    status = Topic.status("car-1", root=mqtt_topic_root).value
    agent, _ = make_agent(fast_config(url, mqtt_topic_root))

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: agent.stats.fixes_acked >= 1, "a fix acked")
            late = subscriber(url, "late").start(status)
            await eventually(lambda: late.on(status), "the retained status")
            message = late.on(status)[0]
            assert message.retain
            assert decode_status(message.payload).online
        later = subscriber(url, "later").start(status)
        await eventually(lambda: later.on(status), "the retained offline status")
        assert not decode_status(later.on(status)[0].payload).online

    asyncio.run(scenario())
