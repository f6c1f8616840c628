"""Live fan-out: compact vehicle state changes on a Redis pub/sub channel, after each commit.

The API's WebSocket subscribes to `LIVE_CHANNEL` and forwards to the live map. A vehicle's
changes are coalesced to at most one message per `interval_s` (the latest state wins, sent
when the interval has passed), and a state that only moved `last_seen` is not sent at all:
a map needs positions and status, not heartbeats. Fan-out is best effort: the database is
the record, so when Redis is down messages are dropped (counted, logged) and ingest goes on.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import redis

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from datetime import datetime

    from hub.repository.vehicle_state import LiveState
    from hub.stats import HubStats

log = logging.getLogger(__name__)

LIVE_CHANNEL: Final = "freecar:live"
"""The Redis pub/sub channel of live state changes; the API subscribes to the same name."""

# Redis is on the local network: a server that takes longer is down, and ingest must not wait.
REDIS_TIMEOUT_S: Final = 2.0
# Log a Redis failure at most this often; the counter says how many there were.
_ERROR_LOG_INTERVAL_S: Final = 30.0


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _round(value: float | None) -> float | None:
    # Real (float4) columns come back with float32 noise (271.3 -> 271.29998779296875).
    return None if value is None else round(value, 2)


def live_message(state: LiveState) -> dict[str, Any]:
    """The compact JSON object sent for one vehicle (without `seen`, see `encode`)."""
    return {
        "vid": state.vehicle_id,
        "ts": _millis(state.ts),
        "lat": state.lat,
        "lon": state.lon,
        "speed_kmh": _round(state.speed_kmh),
        "heading": _round(state.heading),
        "odometer_km": _round(state.odometer_km),
        "fuel_pct": _round(state.fuel_pct),
        "battery_pct": _round(state.battery_pct),
        "locked": state.locked,
        "doors_open": state.doors_open,
        "engine_on": state.engine_on,
        "alarm": state.alarm,
        "online": state.online,
    }


class LiveFanout:
    """Coalesces state changes per vehicle and publishes them to Redis."""

    def __init__(
        self,
        redis_url: str,
        *,
        stats: HubStats,
        interval_s: float = 1.0,
        channel: str = LIVE_CHANNEL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.interval_s = interval_s
        self._stats = stats
        self._clock = clock
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        # vehicle -> (message without `seen`, last seen in ms) waiting for its turn
        self._pending: dict[str, tuple[dict[str, Any], int]] = {}
        self._sent_at: dict[str, float] = {}
        self._sent: dict[str, dict[str, Any]] = {}
        self._last_error_log = float("-inf")

    @property
    def pending(self) -> int:
        """Vehicles whose latest change waits for its interval."""
        return len(self._pending)

    def offer(self, states: Iterable[LiveState]) -> None:
        """Queue committed states; unchanged ones (apart from last seen) are ignored."""
        for state in states:
            message = live_message(state)
            vehicle_id = state.vehicle_id
            if vehicle_id not in self._pending and self._sent.get(vehicle_id) == message:
                continue
            self._pending[vehicle_id] = (message, _millis(state.last_seen_at))

    def publish_due(self) -> int:
        """Publish every pending change whose vehicle's interval has passed; return the count."""
        if not self._pending:
            return 0
        now = self._clock()
        due = [
            vid
            for vid in self._pending
            if now - self._sent_at.get(vid, float("-inf")) >= self.interval_s
        ]
        if not due:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for vid in due:
            message, seen = self._pending[vid]
            pipe.publish(self.channel, json.dumps({**message, "seen": seen}, separators=(",", ":")))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self._stats.live_errors += len(due)
            if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
                self._last_error_log = now
                log.warning("live fan-out to Redis failed, changes dropped: %s", exc)
            # Best effort: drop these changes rather than grow while Redis is away.
            for vid in due:
                del self._pending[vid]
            return 0
        for vid in due:
            self._sent[vid] = self._pending.pop(vid)[0]
            self._sent_at[vid] = now
        self._stats.live_published += len(due)
        return len(due)

    def close(self) -> None:
        """Close the Redis connection pool."""
        self._redis.close()
