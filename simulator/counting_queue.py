"""A FixQueue wrapper that counts the fixes the broker really acknowledged.

Each fix has its own queue id and its own `seq`. At its first PUBACK a fix either leaves
the queue (`remove`, broker acknowledgements) or is marked delivered while it waits for the
hub's storage acknowledgement (`mark_delivered`, which says whether it was new); a fix
marked delivered is never removed by `remove`. So counting both gives the number of
distinct (vehicle, seq) pairs the broker acknowledged, however often a fix was sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vehicle_agent.queue import CommandLog, FixQueue
    from vehicle_agent.records import QueuedFix


class CountingQueue:
    """Delegates to a FixQueue; `unique_acked` counts fixes at their first PUBACK."""

    def __init__(self, inner: FixQueue) -> None:
        self.inner = inner
        self.unique_acked = 0
        self.max_fixes: int = inner.max_fixes
        self.commands: CommandLog = inner.commands

    @property
    def last_seq(self) -> int | None:
        """See FixQueue."""
        return self.inner.last_seq

    @property
    def last_ts(self) -> int | None:
        """See FixQueue."""
        return self.inner.last_ts

    @property
    def dropped(self) -> int:
        """See FixQueue."""
        return self.inner.dropped

    @property
    def last_id(self) -> int:
        """See FixQueue."""
        return self.inner.last_id

    @property
    def queue_id(self) -> int:
        """See FixQueue."""
        return self.inner.queue_id

    @property
    def confirmed_next(self) -> int | None:
        """See FixQueue."""
        return self.inner.confirmed_next

    @property
    def delivered(self) -> int:
        """See FixQueue."""
        return self.inner.delivered

    def __len__(self) -> int:
        return len(self.inner)

    def put(self, seq: int, ts: int, payload: bytes) -> int:
        """See FixQueue."""
        return self.inner.put(seq, ts, payload)

    def floor_after_put(self) -> int | None:
        """See FixQueue."""
        return self.inner.floor_after_put()

    def read(self, *, after: int = 0, limit: int) -> list[QueuedFix]:
        """See FixQueue."""
        return self.inner.read(after=after, limit=limit)

    def remove(self, ids: Sequence[int]) -> int:
        """See FixQueue; also counts what was really removed."""
        removed = self.inner.remove(ids)
        self.unique_acked += removed
        return removed

    def mark_delivered(self, ids: Sequence[int]) -> int:
        """See FixQueue; also counts the fixes delivered for the first time."""
        new = self.inner.mark_delivered(ids)
        self.unique_acked += new
        return new

    def remove_delivered(self) -> int:
        """See FixQueue (counted when they were delivered)."""
        return self.inner.remove_delivered()

    def confirm(self, next_seq: int) -> int:
        """See FixQueue (counted when they were delivered)."""
        return self.inner.confirm(next_seq)

    def close(self) -> None:
        """See FixQueue."""
        self.inner.close()
