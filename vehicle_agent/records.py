"""What the queues store: fixes waiting for their PUBACK, commands handled, and counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID


@dataclass(frozen=True, slots=True)
class QueuedFix:
    """One fix waiting to be acknowledged: its queue id, its `seq` and its encoded JSON."""

    id: int
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class HandledCommand:
    """A command the agent has started handling, remembered until it expires."""

    cmd_id: UUID
    expires_at: float
    # None while the action runs; still None after a restart if the agent died mid-action.
    ack: bytes | None = None
    ack_sent: bool = False


class QueueCounters:
    """The bound and the counters every fix queue keeps, exposed read-only (see FixQueue).

    Both queues inherit this; each moves the counters forward in its own `put`, and the
    SQLite one also loads them from its file at start.
    """

    def __init__(self, max_fixes: int) -> None:
        if max_fixes < 1:
            raise ValueError("max_fixes must be at least 1")
        self.max_fixes = max_fixes
        self._last_id = 0
        self._last_seq: int | None = None
        self._last_ts: int | None = None
        self._dropped = 0

    @property
    def last_seq(self) -> int | None:
        """See FixQueue."""
        return self._last_seq

    @property
    def last_ts(self) -> int | None:
        """See FixQueue."""
        return self._last_ts

    @property
    def dropped(self) -> int:
        """See FixQueue."""
        return self._dropped

    @property
    def last_id(self) -> int:
        """See FixQueue."""
        return self._last_id
