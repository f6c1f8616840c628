"""A FixQueue wrapper that counts the fixes the broker really acknowledged.

Each fix has its own queue id and its own `seq`, and an id leaves the queue once, when its
PUBACK arrives; so the number of ids actually removed is the number of distinct
(vehicle, seq) pairs the broker acknowledged, however often a fix was sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vehicle_agent.queue import CommandLog, FixQueue
    from vehicle_agent.records import QueuedFix


class CountingQueue:
    """Delegates to a FixQueue; `unique_acked` counts fixes removed after their PUBACK."""

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

    def __len__(self) -> int:
        return len(self.inner)

    def put(self, seq: int, ts: int, payload: bytes) -> int:
        """See FixQueue."""
        return self.inner.put(seq, ts, payload)

    def read(self, *, after: int = 0, limit: int) -> list[QueuedFix]:
        """See FixQueue."""
        return self.inner.read(after=after, limit=limit)

    def remove(self, ids: Sequence[int]) -> int:
        """See FixQueue; also counts what was really removed."""
        removed = self.inner.remove(ids)
        self.unique_acked += removed
        return removed

    def close(self) -> None:
        """See FixQueue."""
        self.inner.close()
