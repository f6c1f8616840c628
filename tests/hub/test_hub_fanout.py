"""Live fan-out to Redis: coalesced per vehicle, best effort when Redis is away."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from hub.fanout import LIVE_CHANNEL, LiveFanout
from hub.repository.vehicle_state import LiveState
from hub.stats import HubStats

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(vehicle: str, second: int, **changes: Any) -> LiveState:
    base = LiveState(
        vehicle_id=vehicle,
        ts=T0 + timedelta(seconds=second),
        lat=31.2,
        lon=121.4,
        speed_kmh=271.29998779296875,
        heading=None,
        odometer_km=10.0,
        fuel_pct=50.0,
        battery_pct=None,
        locked=False,
        doors_open=False,
        engine_on=True,
        alarm=None,
        online=True,
        last_seen_at=T0 + timedelta(seconds=second),
        rev=second,
    )
    return replace(base, **changes)


def listen(url: str, channel: str) -> redis.client.PubSub:
    """A subscriber that is subscribed (confirmed) when returned."""
    listener = redis.Redis.from_url(url).pubsub()
    listener.subscribe(channel)
    confirmation = listener.get_message(timeout=10)
    assert confirmation is not None
    assert confirmation["type"] == "subscribe"
    return listener


def drain(listener: redis.client.PubSub) -> list[dict[str, Any]]:
    found = []
    while (message := listener.get_message(timeout=0.2)) is not None:
        found.append(json.loads(message["data"]))
    return found


def test_changes_are_coalesced_per_vehicle(redis_url: str, mqtt_topic_root: str) -> None:
    channel = f"{LIVE_CHANNEL}:{mqtt_topic_root}"
    clock = Clock()
    stats = HubStats()
    fanout = LiveFanout(redis_url, stats=stats, interval_s=1.0, channel=channel, clock=clock)
    listener = listen(redis_url, channel)
    try:
        fanout.offer([state("a", 1), state("b", 1)])
        assert fanout.publish_due() == 2
        # Within the interval: held back, and the newest of several wins.
        fanout.offer([state("a", 2)])
        fanout.offer([state("a", 3, locked=True)])
        assert fanout.publish_due() == 0
        clock.now += 1.0
        assert fanout.publish_due() == 1
        # Only last_seen moved: nothing worth a map update.
        clock.now += 5
        fanout.offer([state("b", 1, last_seen_at=T0 + timedelta(seconds=9))])
        assert fanout.pending == 0
        messages = drain(listener)
    finally:
        listener.close()
        fanout.close()
    assert [(m["vid"], m["ts"]) for m in messages] == [
        ("a", int((T0 + timedelta(seconds=1)).timestamp() * 1000)),
        ("b", int((T0 + timedelta(seconds=1)).timestamp() * 1000)),
        ("a", int((T0 + timedelta(seconds=3)).timestamp() * 1000)),
    ]
    assert messages[-1]["locked"] is True
    assert messages[0]["speed_kmh"] == 271.3
    assert stats.live_published == 3


def test_redis_away_costs_the_changes_not_the_hub() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stats = HubStats()
    fanout = LiveFanout(f"redis://127.0.0.1:{port}/0", stats=stats)
    fanout.offer([state("a", 1)])
    assert fanout.publish_due() == 0
    assert stats.live_errors == 1
    assert fanout.pending == 0
    fanout.close()
