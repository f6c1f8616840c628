"""What the queues store: fixes waiting for their PUBACK and commands already handled."""

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
