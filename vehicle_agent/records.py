"""What the queues store: fixes waiting to be acknowledged, commands handled, and counters."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol.schema import MAX_QUEUE_ID

if TYPE_CHECKING:
    from uuid import UUID


@dataclass(frozen=True, slots=True)
class QueuedFix:
    """One fix waiting to be acknowledged: its id in the queue, its `seq` and its encoded JSON."""

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


def new_queue_id() -> int:
    """A random id for a new queue, so the hub can tell its `seq` counter from a lost one's."""
    return secrets.randbelow(MAX_QUEUE_ID) + 1


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
        self._queue_id = new_queue_id()
        self._confirmed_next: int | None = None
        # Ids of queued fixes the broker has acknowledged, for this process only: after a
        # restart every queued fix is sent again anyway.
        self._delivered: set[int] = set()

    @property
    def queue_id(self) -> int:
        """See FixQueue."""
        return self._queue_id

    @property
    def confirmed_next(self) -> int | None:
        """See FixQueue."""
        return self._confirmed_next

    @property
    def delivered(self) -> int:
        """See FixQueue."""
        return len(self._delivered)

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
