"""Store and forward: every fix waits here from the moment it is taken until it is acknowledged.

Acknowledged means stored by the hub (its `stored` message covers the fix's seq, contract
1.1) or, with a hub that predates that, received by the broker (PUBACK); see
`vehicle_agent.storage_acks`. A queue also remembers the counters that must survive a
restart (the last `seq` and `ts` handed out, the number of fixes dropped, the queue's id and
the hub's last word on it) and, through `commands`, the commands already handled. Two
implementations: `SqliteFixQueue` for a real unit (one file, survives `kill -9`) and
`MemoryFixQueue` for the simulator, whose thousands of cars need no disk.

Fixes get ids that only ever grow (never reused, even once the queue is empty), so a sender
can keep a cursor ("everything after id N") instead of a set of what it has in flight. A
queue's seqs grow with its ids (`fixes.next_stamp`), so "every seq below N" is also "every id
below the first fix with a seq of N or more".
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from vehicle_agent.records import HandledCommand, QueueCounters, QueuedFix

# Re-exported: the contract names both implementations as living in this module.
from vehicle_agent.sqlite_queue import SqliteFixQueue

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

__all__ = [
    "CommandLog",
    "FixQueue",
    "HandledCommand",
    "MemoryCommandLog",
    "MemoryFixQueue",
    "QueuedFix",
    "SqliteFixQueue",
]


class CommandLog(Protocol):
    """Which commands were handled and what was answered, to drop redeliveries."""

    def get(self, cmd_id: UUID) -> HandledCommand | None:
        """The record of a command, or None if it was never seen (or has been pruned)."""

    def begin(self, cmd_id: UUID, expires_at: float) -> None:
        """Record a command before acting on it, so a redelivery never acts twice."""

    def finish(self, cmd_id: UUID, ack: bytes) -> None:
        """Record the ack answered for a command (not yet known to be delivered)."""

    def mark_sent(self, cmd_id: UUID) -> None:
        """Record that the broker acknowledged the ack."""

    def unsent(self) -> list[HandledCommand]:
        """Commands whose ack the broker has not acknowledged, oldest first."""

    def prune(self, now: float) -> int:
        """Forget commands expired before `now` (Unix seconds); return how many."""


class FixQueue(Protocol):
    """A bounded FIFO of encoded fixes: the oldest are dropped (and counted) when full."""

    @property
    def max_fixes(self) -> int:
        """How many fixes the queue holds before it drops the oldest."""

    @property
    def commands(self) -> CommandLog:
        """The command log kept alongside the fixes (same file, same lifetime)."""

    @property
    def last_seq(self) -> int | None:
        """The highest `seq` ever put, or None for a brand-new queue."""

    @property
    def last_ts(self) -> int | None:
        """The highest `ts` ever put, or None for a brand-new queue."""

    @property
    def dropped(self) -> int:
        """How many fixes were dropped because the queue was full, ever."""

    @property
    def last_id(self) -> int:
        """The id of the most recent fix put (0 if none ever was)."""

    @property
    def queue_id(self) -> int:
        """This queue's random id (1 to 2^31-1): it names the counter its seqs come from."""

    @property
    def confirmed_next(self) -> int | None:
        """The highest `next_seq` the hub confirmed for this queue; None if it never did."""

    @property
    def delivered(self) -> int:
        """How many waiting fixes the broker has acknowledged (in this process)."""

    def __len__(self) -> int:
        """The number of fixes waiting."""

    def put(self, seq: int, ts: int, payload: bytes) -> int:
        """Append a fix, dropping the oldest if full; return how many were dropped."""

    def floor_after_put(self) -> int | None:
        """The lowest seq held once one more fix is put; None if only that fix will be."""

    def read(self, *, after: int = 0, limit: int) -> list[QueuedFix]:
        """Up to `limit` waiting fixes with an id above `after`, oldest first."""

    def remove(self, ids: Sequence[int]) -> int:
        """Remove acknowledged fixes (ids already gone are ignored); return how many."""

    def mark_delivered(self, ids: Sequence[int]) -> int:
        """Note that the broker acknowledged these fixes; return how many were new to that."""

    def remove_delivered(self) -> int:
        """Remove every fix the broker has acknowledged; return how many."""

    def confirm(self, next_seq: int) -> int:
        """Remove every fix with a seq below `next_seq` (the hub has them); return how many."""

    def close(self) -> None:
        """Release the storage."""


class MemoryCommandLog:
    """CommandLog kept in a dict; forgotten on restart."""

    def __init__(self) -> None:
        self._records: dict[UUID, HandledCommand] = {}

    def get(self, cmd_id: UUID) -> HandledCommand | None:
        """See CommandLog."""
        return self._records.get(cmd_id)

    def begin(self, cmd_id: UUID, expires_at: float) -> None:
        """See CommandLog."""
        self._records[cmd_id] = HandledCommand(cmd_id, expires_at)

    def finish(self, cmd_id: UUID, ack: bytes) -> None:
        """See CommandLog."""
        self._records[cmd_id] = replace(self._records[cmd_id], ack=ack)

    def mark_sent(self, cmd_id: UUID) -> None:
        """See CommandLog."""
        if cmd_id in self._records:
            self._records[cmd_id] = replace(self._records[cmd_id], ack_sent=True)

    def unsent(self) -> list[HandledCommand]:
        """See CommandLog."""
        return [r for r in self._records.values() if r.ack is not None and not r.ack_sent]

    def prune(self, now: float) -> int:
        """See CommandLog."""
        expired = [cmd_id for cmd_id, r in self._records.items() if r.expires_at < now]
        for cmd_id in expired:
            del self._records[cmd_id]
        return len(expired)


class MemoryFixQueue(QueueCounters):
    """FixQueue in memory, for simulated cars: same behaviour, nothing survives the process."""

    def __init__(self, max_fixes: int) -> None:
        super().__init__(max_fixes)
        self.commands: CommandLog = MemoryCommandLog()
        self._fixes: dict[int, QueuedFix] = {}
        # Every id put, ascending, for bisecting to a cursor; ids removed from `_fixes` stay
        # here until `_compact` (they are skipped on read), so acks in any order stay cheap.
        self._ids: list[int] = []

    def __len__(self) -> int:
        return len(self._fixes)

    def put(self, seq: int, ts: int, payload: bytes) -> int:
        """See FixQueue."""
        dropped = 0
        while len(self._fixes) >= self.max_fixes:
            oldest = next(iter(self._fixes))  # dicts keep insertion order: ids ascend
            del self._fixes[oldest]
            self._delivered.discard(oldest)
            dropped += 1
        self._last_id += 1
        self._fixes[self._last_id] = QueuedFix(self._last_id, seq, payload)
        self._ids.append(self._last_id)
        self._last_seq, self._last_ts = seq, ts
        self._dropped += dropped
        self._compact()
        return dropped

    def floor_after_put(self) -> int | None:
        """See FixQueue."""
        # A full queue drops its oldest to make room: the floor is the first one kept.
        skip = max(0, len(self._fixes) + 1 - self.max_fixes)
        kept = itertools.islice(self._fixes.values(), skip, None)
        first = next(kept, None)
        return None if first is None else first.seq

    def read(self, *, after: int = 0, limit: int) -> list[QueuedFix]:
        """See FixQueue."""
        found: list[QueuedFix] = []
        for index in range(bisect.bisect_right(self._ids, after), len(self._ids)):
            fix = self._fixes.get(self._ids[index])
            if fix is not None:
                found.append(fix)
                if len(found) >= limit:
                    break
        return found

    def remove(self, ids: Sequence[int]) -> int:
        """See FixQueue."""
        removed = sum(1 for fix_id in ids if self._fixes.pop(fix_id, None) is not None)
        self._delivered.difference_update(ids)
        self._compact()
        return removed

    def mark_delivered(self, ids: Sequence[int]) -> int:
        """See FixQueue."""
        new = {fix_id for fix_id in ids if fix_id in self._fixes} - self._delivered
        self._delivered |= new
        return len(new)

    def remove_delivered(self) -> int:
        """See FixQueue."""
        return self.remove(sorted(self._delivered))

    def confirm(self, next_seq: int) -> int:
        """See FixQueue."""
        removed = 0
        for fix_id in self._ids:  # ascending, and so are the seqs
            fix = self._fixes.get(fix_id)
            if fix is None:
                continue
            if fix.seq >= next_seq:
                break
            del self._fixes[fix_id]
            self._delivered.discard(fix_id)
            removed += 1
        if self._confirmed_next is None or next_seq > self._confirmed_next:
            self._confirmed_next = next_seq
        self._compact()
        return removed

    def _compact(self) -> None:
        # Rebuild the id list once it holds as many gone ids as live ones: amortised O(1).
        if len(self._ids) > 2 * len(self._fixes) + 64:
            self._ids = list(self._fixes)

    def close(self) -> None:
        """Nothing to release."""
