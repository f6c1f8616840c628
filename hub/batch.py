"""One batch of ingest work, and the hand-off of batches from the MQTT thread to the writer.

The MQTT thread fills the current `Batch`; the writer takes it when it holds
`max_fixes` fixes, `max_messages` messages or `max_bytes` bytes of payload, or when its
first message is `max_delay_s` old, whichever comes first, and a fresh batch starts filling
while the writer commits.

Memory stays bounded when the writer cannot commit (database down) and whatever the
messages say. The broker's window comes first: it stops sending once the hub's
unacknowledged messages fill it (MQTT 5 Receive Maximum, twice `max_messages`; for MQTT
3.1.1, Mosquitto's max_inflight_messages). The guarantee does not depend on the broker: the
MQTT thread blocks in `acquire()` once the current batch holds `2 * max_fixes` fixes or
`2 * max_bytes` bytes, so the hub holds at most two such batches (the writer's and the
current one); while blocked it reads nothing, and TCP flow control holds the broker back.
Bytes count every message's payload as received, and a dead letter keeps at most
`DEAD_LETTER_PAYLOAD_LIMIT` of it: a flood of large junk costs a few batches' worth.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NamedTuple

from hub.watermarks import HandledFixes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime
    from uuid import UUID

    from db.telemetry import TelemetryRow
    from protocol.topics import Topic

# How long a blocked producer sleeps between checks that the hub is not stopping.
_BLOCKED_POLL_S = 0.25
# A dead letter keeps this much of its payload. The largest message a unit sends under the
# protocol (1,000 fixes of about 250 bytes) fits whole, so any real message the hub refused
# can be replayed; past that it is junk, and its size and SHA-256 identify it. Kept whole,
# 800 junk messages of 1 MB took a hub to 6.4 GB and a statement past PostgreSQL's limits.
DEAD_LETTER_PAYLOAD_LIMIT: Final = 256 * 1024
# Longest text (topic, detail) a dead letter keeps: enough for any topic and error message.
_TEXT_LIMIT: Final = 500


def clean_text(text: str) -> str:
    """Text a PostgreSQL text column accepts (no NUL), cut to a length worth keeping."""
    # An error may quote a NUL from a hostile payload; a topic may hold one too.
    return text.replace("\x00", "\\x00")[:_TEXT_LIMIT]


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
    """A message the hub could not accept: its payload (cut to a bound), size and hash."""

    topic: str
    payload: bytes
    """The first `DEAD_LETTER_PAYLOAD_LIMIT` bytes of the payload (all of it, usually)."""
    reason: str
    detail: str
    received_at: datetime
    payload_size: int
    """The whole payload's size in bytes."""
    payload_sha256: bytes
    """The whole payload's SHA-256."""

    @classmethod
    def of(
        cls, topic: str, payload: bytes, reason: str, detail: str, received_at: datetime
    ) -> DeadLetter:
        """A dead letter for a message: text cleaned, payload cut, whole size and hash kept."""
        return cls(
            clean_text(topic),
            payload[:DEAD_LETTER_PAYLOAD_LIMIT],
            reason,
            clean_text(detail),
            received_at,
            len(payload),
            hashlib.sha256(payload).digest(),
        )


@dataclass(frozen=True, slots=True)
class CommandAck:
    """A vehicle's answer to a command, as received on its `cmd/ack` topic."""

    vehicle_id: str
    cmd_id: UUID
    status: str
    reason: str | None
    locked: bool | None
    received_at: datetime
    topic: str
    payload: bytes
    """The message as received, to dead-letter if the database refuses it."""


class TelemetryMessage(NamedTuple):
    """Where one telemetry message's rows sit in the batch, to single it out if refused."""

    topic: str
    payload: bytes
    received_at: datetime
    first_row: int
    end_row: int


class StatusMessage(NamedTuple):
    """A status message whose evidence the batch holds, to single it out if refused."""

    vehicle_id: str
    topic: str
    payload: bytes
    received_at: datetime


class Held(NamedTuple):
    """A message of a vehicle the hub does not know yet: the writer asks the database first."""

    topic: Topic
    raw_topic: str
    payload: bytes
    retained: bool
    received_at: datetime


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
    status_messages: list[StatusMessage] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    """Messages of vehicles not in the hub's inventory: the writer settles them first."""
    handled: HandledFixes = field(default_factory=HandledFixes)
    """The fixes of every telemetry message the batch settles, kept or not (contract 1.1)."""
    # (connection generation, packet id) of each QoS 1 message, acknowledged after commit.
    deliveries: list[tuple[int, int]] = field(default_factory=list)
    messages: int = 0
    # Fixes received (kept or not) and payload bytes received: what the size limits and
    # the memory bound count.
    fixes: int = 0
    bytes: int = 0
    opened_at: float | None = None

    def keep_row(self, row: TelemetryRow, *, newest: bool) -> None:
        """Add a row to store; `newest` (the filter's word) makes it the vehicle's state."""
        self.rows.append(row)
        if newest or row.vehicle_id not in self.latest:
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
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_fixes = max_fixes
        self.max_messages = max_messages
        self.max_delay_s = max_delay_s
        self.max_bytes = max_bytes
        # Past these the producer waits: the writer is behind by a whole batch already.
        self.hard_cap_fixes = 2 * max_fixes
        self.hard_cap_bytes = 2 * max_bytes
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
        return (
            batch.fixes >= self.max_fixes
            or batch.messages >= self.max_messages
            or batch.bytes >= self.max_bytes
        )

    def _at_hard_cap(self, batch: Batch) -> bool:
        return batch.fixes >= self.hard_cap_fixes or batch.bytes >= self.hard_cap_bytes

    def acquire(self) -> Batch | None:
        """Lock and lend the current batch to the producer; None once closed.

        Blocks while the current batch is at the hard cap, so a writer that cannot commit
        stops the producer instead of letting memory grow. Pair every batch returned with
        `release()`. (Two calls rather than a context manager: this runs per message.)
        """
        cond = self._cond
        cond.acquire()
        while self._at_hard_cap(self._current) and not self._closed:
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
        if self._full(batch):
            self._cond.notify_all()
        self._cond.release()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the producer's lock without taking a batch: for the writer's admissions.

        Intake (its filters and counters) is only ever used under this lock, so the writer
        may run it too, on the batch it is writing, while the producer waits.
        """
        with self._cond:
            yield

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
