"""When a published fix may leave the queue: at the hub's storage acknowledgement, or the broker's.

Pure bookkeeping, no I/O: the agent reports what the broker acknowledged (PUBACK) and what
the hub said on the `stored` topic, passes the time, and does what the answers say.

In **hub** mode (contract 1.1) a fix leaves the queue only once a `stored` message of this
queue covers it (every seq below `next_seq` is handled by the hub), so a broker that
crashes after its PUBACK loses nothing: the fix is still queued and goes again after the
reconnect. At most `window` messages wait for that at once, once the hub has shown it
answers. A fix the broker took `resend_after_s` ago that a `stored` message still names as
the next one the hub waits for was lost on the way (a gap the hub cannot pass): everything
queued is sent again.

In **broker** mode (contract 1.0) a fix leaves at its PUBACK. Policy `auto` starts in hub
mode and falls back to broker mode when no `stored` message arrives while fixes wait:
`timeout_s` if the hub has not been heard since the agent started (it predates storage
acknowledgements), `silence_s` if it has (a long outage, or hubs rolled back). The first
`stored` message brings it back to hub mode. Policy `hub` never falls back; policy
`broker` never leaves broker mode and does not announce its queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from protocol.stored import Stored

StorageAckPolicy = Literal["auto", "hub", "broker"]


class Mode(StrEnum):
    """Whose acknowledgement lets a published fix leave the queue."""

    HUB = "hub"
    BROKER = "broker"


@dataclass(frozen=True, slots=True)
class Sent:
    """A telemetry message the broker acknowledged on this connection, not yet confirmed."""

    first_seq: int
    last_seq: int
    delivered_at: float


class Verdict(NamedTuple):
    """What to do with a `stored` message."""

    confirm: int | None
    """Remove every queued fix with a seq below this (None: nothing new to remove)."""
    resend: bool
    """Send everything still queued again: the hub is stuck at a fix lost on the way."""
    ignored: str | None = None
    """Why the message says nothing about this queue, for the log."""


class StorageAcks:
    """The agent's side of contract 1.1's storage acknowledgement, for one queue."""

    def __init__(  # noqa: PLR0913 - keyword-only settings, all from AgentConfig
        self,
        *,
        policy: StorageAckPolicy,
        queue_id: int,
        timeout_s: float,
        silence_s: float,
        window: int,
        resend_after_s: float,
    ) -> None:
        self.policy = policy
        self.queue_id = queue_id
        self.mode = Mode.BROKER if policy == "broker" else Mode.HUB
        self._timeout_s = timeout_s
        self._silence_s = silence_s
        self._window = window
        self._resend_after_s = resend_after_s
        # Messages delivered on this connection whose fixes no `stored` message covers yet.
        self._sent: list[Sent] = []
        self._heard_at: float | None = None
        # The latest `next_seq` heard for this queue: what the hub believes now. Lower than
        # the queue's confirmed one when the hub's state went back (a database restored,
        # hubs publishing out of order); the floor then tells it what it missed.
        self._hub_next: int | None = None
        # When the oldest delivery still waiting for the hub was acknowledged by the broker.
        self._waiting_since: float | None = None

    @property
    def announces(self) -> bool:
        """Whether fixes carry `queue_id` (and the unit subscribes to its `stored` topic)."""
        return self.policy != "broker"

    @property
    def heard(self) -> bool:
        """Whether a `stored` message arrived since the agent started: the hub answers."""
        return self._heard_at is not None

    @property
    def unconfirmed(self) -> int:
        """Messages delivered on this connection and not yet confirmed by the hub."""
        return len(self._sent)

    def connected(self, now: float) -> None:
        """A new connection: everything still queued is sent again, so forget the last one's.

        The hub's silence is measured from here: while the unit was offline nothing could
        reach it, and its retained `stored` message arrives right after subscribing.
        """
        self._sent.clear()
        if self._waiting_since is not None:
            self._waiting_since = now

    def subscription_refused(self) -> bool:
        """The broker refused the `stored` subscription; True if that means broker mode now.

        No storage acknowledgement can arrive on this connection, so policy `auto` stops
        waiting for one at once (the caller removes what the broker already has).
        """
        if self.policy != "auto" or self.mode is Mode.BROKER:
            return False
        self._to_broker_mode()
        return True

    def window_open(self, in_flight: int) -> bool:
        """Whether another message may go, with `in_flight` awaiting their PUBACK."""
        if self.mode is Mode.BROKER or not self.heard:
            # Before the hub has answered, `timeout_s` bounds what waits, not the window:
            # a hub that never answers must not stop the reporting.
            return True
        return len(self._sent) + in_flight < self._window

    def delivered(
        self, first_seq: int, last_seq: int, now: float, *, confirmed_next: int | None = None
    ) -> bool:
        """The broker acknowledged a message of these seqs; True if its fixes leave now.

        `confirmed_next` is the queue's: the hub's word may come before the PUBACK, and a
        message it already covers waits for nothing.
        """
        if self.mode is Mode.BROKER:
            return True
        if confirmed_next is not None and last_seq < confirmed_next:
            return False
        self._sent.append(Sent(first_seq, last_seq, now))
        if self._waiting_since is None:
            self._waiting_since = now
        return False

    def stored(
        self, message: Stored, *, last_seq: int | None, confirmed_next: int | None, now: float
    ) -> Verdict:
        """Take a `stored` message in; `last_seq` and `confirmed_next` are the queue's."""
        if message.queue_id != self.queue_id:
            # An earlier queue's retained word: it proves nothing about today's hub.
            return Verdict(None, resend=False, ignored="for another queue of this vehicle")
        if message.next_seq > (0 if last_seq is None else last_seq + 1):
            # No hub can have handled a seq this queue never produced: not ours to act on.
            return Verdict(None, resend=False, ignored="beyond the newest fix")
        self._heard_at = now
        if self.mode is Mode.BROKER and self.policy != "broker":
            self.mode = Mode.HUB
        self._hub_next = message.next_seq
        known = -1 if confirmed_next is None else confirmed_next
        confirm = message.next_seq if message.next_seq > known else None
        gap = max(message.next_seq, known)
        self._sent = [sent for sent in self._sent if sent.last_seq >= gap]
        stale = now - self._resend_after_s
        resend = any(
            sent.first_seq <= gap <= sent.last_seq and sent.delivered_at <= stale
            for sent in self._sent
        )
        if resend:
            self._sent.clear()
        if not self._sent:
            self._waiting_since = None
        return Verdict(confirm, resend=resend)

    def floor_to_announce(self, floor: int, confirmed_next: int | None) -> int | None:
        """The `queue_floor` a new fix carries, or None when the hub needs no telling.

        `floor` is the lowest seq the queue holds once the fix is in. The hub waits for
        every seq from its `next_seq` on (from 0 for a queue it has not answered yet); when
        the unit has let go of some of them (its full queue dropped them, broker mode
        removed them at their PUBACK, or the hub forgot what it had confirmed), the floor
        lets the hub pass the gap. In broker mode, before any hub has answered for this
        queue, the hub most likely predates the field: say nothing.
        """
        known = self._hub_next if self._hub_next is not None else confirmed_next
        if known is None:
            if self.mode is Mode.BROKER:
                return None
            known = 0
        return floor if floor > known else None

    def fallback_at(self) -> float | None:
        """When `check` would fall back to broker mode if nothing is heard (None: never)."""
        if self.policy != "auto" or self.mode is Mode.BROKER or self._waiting_since is None:
            return None
        if self._heard_at is None:
            return self._waiting_since + self._timeout_s
        return max(self._waiting_since, self._heard_at) + self._silence_s

    def check(self, now: float) -> bool:
        """Fall back to broker mode if the hub has been silent too long; True if it did.

        The caller then removes every fix the broker has acknowledged.
        """
        due = self.fallback_at()
        if due is None or now < due:
            return False
        self._to_broker_mode()
        return True

    def _to_broker_mode(self) -> None:
        self.mode = Mode.BROKER
        self._sent.clear()
        self._waiting_since = None
