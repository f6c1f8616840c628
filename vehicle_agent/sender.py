"""Send queued fixes over one MQTT connection, and report each message the broker acked.

At the start of a connection, everything already in the queue is the *backlog*; what is
queued afterwards is *live*. Live fixes go first, one message each, as soon as they are
queued. The backlog follows, oldest first, as JSON arrays of up to `batch_size` fixes, at
most `rate` messages a second, so a fleet coming back from an outage does not bury the hub.
At most `window` messages are unacknowledged at once: a publisher that outruns its broker's
PUBACKs piles up an unbounded outgoing queue and collapses. `may_send` can hold messages
back further (the storage acknowledgement's window of messages the hub has not confirmed).

The sender never removes fixes: `on_delivered` decides, at each PUBACK, whether they leave
now or wait for the hub (`vehicle_agent.storage_acks`). A failed or timed-out publish ends
the connection (the exception propagates); the fixes stay queued and become backlog of the
next connection. `rewind` makes everything still queued backlog again without reconnecting.
A fix can therefore arrive twice, never zero times: the hub stores one fix per (vehicle, ts).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, NoReturn, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from vehicle_agent.queue import FixQueue
    from vehicle_agent.records import QueuedFix


class Publish(Protocol):
    """Publish at QoS 1 and return once the broker acknowledged (aiomqtt's `publish`)."""

    async def __call__(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        timeout: float,  # noqa: ASYNC109 - aiomqtt's signature, which this describes
    ) -> None:
        """Publish one message."""


def batch_payload(fixes: list[QueuedFix]) -> bytes:
    """A JSON array of already-encoded fixes, without decoding them again."""
    return b"[" + b",".join(fix.payload for fix in fixes) + b"]"


class TelemetrySender:
    """Drains a FixQueue into one connection; build a new one for every connection."""

    def __init__(  # noqa: PLR0913 - keyword-only tuning knobs, all from AgentConfig
        self,
        queue: FixQueue,
        publish: Publish,
        topic: str,
        *,
        window: int,
        batch_size: int,
        rate: float,
        timeout: float,
        on_delivered: Callable[[list[QueuedFix]], None],
        may_send: Callable[[int], bool] | None = None,
    ) -> None:
        self._queue = queue
        self._publish = publish
        self._topic = topic
        self._batch_size = batch_size
        self._interval = 1.0 / rate
        self._timeout = timeout
        self._on_delivered = on_delivered
        self._may_send = may_send
        self._window = asyncio.Semaphore(window)
        self._in_flight = 0
        self._wake = asyncio.Event()
        # Everything up to this id was queued before the connection: the backlog.
        self._boundary = queue.last_id
        self._backlog_cursor = 0
        self._live_cursor = self._boundary
        self._next_backlog_at = 0.0

    @property
    def in_flight(self) -> int:
        """Messages published and still waiting for their PUBACK."""
        return self._in_flight

    @property
    def backlog_done(self) -> bool:
        """Whether every backlog fix has been handed to a publish (not necessarily acked)."""
        return self._backlog_cursor >= self._boundary

    def notify(self) -> None:
        """A fix was queued, or a window opened: send what may go now."""
        self._wake.set()

    def rewind(self) -> None:
        """Send everything still queued again, oldest first, as the backlog of a new connection."""
        self._boundary = self._queue.last_id
        self._backlog_cursor = 0
        self._live_cursor = self._boundary
        self._next_backlog_at = 0.0
        self._wake.set()

    async def run(self) -> NoReturn:
        """Send until cancelled or until a publish fails (then its exception propagates)."""
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as publishes:
            while True:
                await self._window.acquire()
                self._wake.clear()
                if self._may_send is not None and not self._may_send(self._in_flight):
                    # Held back until the hub confirms something (`notify` wakes us).
                    self._window.release()
                    await self._wake.wait()
                    continue
                fixes, as_array = self._next_message(loop.time())
                if fixes:
                    self._in_flight += 1
                    publishes.create_task(self._send(fixes, as_array=as_array))
                    continue
                self._window.release()
                wait = None if self.backlog_done else max(0.0, self._next_backlog_at - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    def _next_message(self, now: float) -> tuple[list[QueuedFix], bool]:
        live = self._queue.read(after=self._live_cursor, limit=1)
        if live:
            self._live_cursor = live[0].id
            return live, False
        if self.backlog_done or now < self._next_backlog_at:
            return [], False
        batch = [
            fix
            for fix in self._queue.read(after=self._backlog_cursor, limit=self._batch_size)
            if fix.id <= self._boundary
        ]
        if not batch:
            # The rest of the backlog was dropped (queue full) or acked meanwhile.
            self._backlog_cursor = self._boundary
            return [], False
        self._backlog_cursor = batch[-1].id
        self._next_backlog_at = now + self._interval
        return batch, True

    async def _send(self, fixes: list[QueuedFix], *, as_array: bool) -> None:
        try:
            payload = batch_payload(fixes) if as_array else fixes[0].payload
            await self._publish(self._topic, payload, qos=1, timeout=self._timeout)
            self._on_delivered(fixes)
        finally:
            self._in_flight -= 1
            self._window.release()
