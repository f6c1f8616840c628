"""One batch of ingest work, and the hand-off of batches from the MQTT thread to the writer.

The MQTT thread fills the current `Batch`; the writer takes it when it holds
`max_fixes` fixes or `max_messages` messages, or when its first message is `max_delay_s`
old, whichever comes first, and a fresh batch starts filling while the writer commits.

Memory stays bounded when the writer cannot commit (database down). The broker's window
comes first: it stops sending once the hub's unacknowledged messages fill it (MQTT 5
Receive Maximum, twice `max_messages`; for MQTT 3.1.1, Mosquitto's max_inflight_messages).
The guarantee does not depend on the broker: the MQTT thread blocks in `acquire()` once the
current batch holds `2 * max_fixes` fixes, so the hub holds at most two such batches (the
writer's and the current one); while blocked it reads nothing, and TCP flow control holds
the broker back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from uuid import UUID

    from db.telemetry import TelemetryRow

# How long a blocked producer sleeps between checks that the hub is not stopping.
_BLOCKED_POLL_S = 0.25


@dataclass(slots=True)
class Presence:
    """What one batch learnt about a vehicle's connection."""

    seen_at: datetime
    # The latest online/offline evidence and its time; None when the batch has none.
    online: bool | None = None
    online_at: datetime | None = None

    def merge(self, seen_at: datetime, *, online: bool | None, online_at: datetime | None) -> None:
        """Fold in one more message: the latest sighting and the latest evidence win."""
        self.seen_at = max(self.seen_at, seen_at)
        if online_at is not None and (self.online_at is None or online_at >= self.online_at):
            self.online = online
            self.online_at = online_at


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the hub could not accept, kept byte for byte."""

    topic: str
    payload: bytes
    reason: str
    detail: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class CommandAck:
    """A vehicle's answer to a command, as received on its `cmd/ack` topic."""

    vehicle_id: str
    cmd_id: UUID
    status: str
    reason: str | None
    locked: bool | None
    received_at: datetime


class TelemetryMessage(NamedTuple):
    """Where one telemetry message's rows sit in the batch, to single it out if refused."""

    topic: str
    payload: bytes
    received_at: datetime
    first_row: int
    end_row: int


@dataclass(slots=True)
class Batch:
    """Everything committed in one transaction, then acknowledged to the broker."""

    rows: list[TelemetryRow] = field(default_factory=list)
    # The newest kept row of each vehicle: what vehicle_state may move forward to.
    latest: dict[str, TelemetryRow] = field(default_factory=dict)
    presence: dict[str, Presence] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    command_acks: list[CommandAck] = field(default_factory=list)
    telemetry_messages: list[TelemetryMessage] = field(default_factory=list)
    # (connection generation, packet id) of each QoS 1 message, acknowledged after commit.
    deliveries: list[tuple[int, int]] = field(default_factory=list)
    messages: int = 0
    # Fixes received (kept or not): what the size limit and the memory bound count.
    fixes: int = 0
    opened_at: float | None = None

    def keep_row(self, row: TelemetryRow) -> None:
        """Add a row to store, and let it become the vehicle's state if it is the newest."""
        self.rows.append(row)
        newest = self.latest.get(row.vehicle_id)
        if newest is None or row.ts > newest.ts:
            self.latest[row.vehicle_id] = row

    def saw(
        self,
        vehicle_id: str,
        seen_at: datetime,
        *,
        online: bool | None = None,
        online_at: datetime | None = None,
    ) -> None:
        """Record that a vehicle was heard from, with any online/offline evidence."""
        presence = self.presence.get(vehicle_id)
        if presence is None:
            self.presence[vehicle_id] = Presence(
                seen_at, online if online_at is not None else None, online_at
            )
        else:
            presence.merge(seen_at, online=online, online_at=online_at)


class Batcher:
    """Hands batches from the one producer (the MQTT thread) to the one consumer (the writer)."""

    def __init__(
        self,
        *,
        max_fixes: int,
        max_messages: int,
        max_delay_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_fixes = max_fixes
        self.max_messages = max_messages
        self.max_delay_s = max_delay_s
        # Past this the producer waits: the writer is behind by a whole batch already.
        self.hard_cap_fixes = 2 * max_fixes
        self._clock = clock
        # A plain Lock, not the default RLock: it is taken for every message.
        self._cond = threading.Condition(threading.Lock())
        self._current = Batch()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether `close()` was called: no more messages are accepted."""
        return self._closed

    def _full(self, batch: Batch) -> bool:
        return batch.fixes >= self.max_fixes or batch.messages >= self.max_messages

    def acquire(self) -> Batch | None:
        """Lock and lend the current batch to the producer; None once closed.

        Blocks while the current batch is at the hard cap, so a writer that cannot commit
        stops the producer instead of letting memory grow. Pair every batch returned with
        `release()`. (Two calls rather than a context manager: this runs per message.)
        """
        cond = self._cond
        cond.acquire()
        while self._current.fixes >= self.hard_cap_fixes and not self._closed:
            cond.wait(_BLOCKED_POLL_S)
        if self._closed:
            cond.release()
            return None
        batch = self._current
        if batch.opened_at is None:
            batch.opened_at = self._clock()
        return batch

    def release(self, batch: Batch) -> None:
        """Give the batch back after adding to it; wake the writer if it is now full."""
        if batch.fixes >= self.max_fixes or batch.messages >= self.max_messages:
            self._cond.notify_all()
        self._cond.release()

    def take(self, timeout: float) -> Batch | None:
        """The next batch once it is full or due, else None after `timeout` seconds.

        After `close()`, returns what is left at once (None if nothing).
        """
        deadline = self._clock() + timeout
        with self._cond:
            while True:
                batch = self._current
                now = self._clock()
                if batch.messages:
                    assert batch.opened_at is not None
                    due_in = batch.opened_at + self.max_delay_s - now
                    if self._closed or self._full(batch) or due_in <= 0:
                        self._current = Batch()
                        self._cond.notify_all()  # a producer blocked at the hard cap may go on
                        return batch
                    wait = min(due_in, deadline - now)
                else:
                    if self._closed:
                        return None
                    wait = deadline - now
                if wait <= 0:
                    return None
                self._cond.wait(wait)

    def close(self) -> None:
        """Accept nothing more; the writer drains what is left."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
