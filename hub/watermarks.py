"""Storage watermarks: which of a unit's fixes the hub has handled, and when to tell the unit.

Pure logic, no I/O: the batch's transaction loads each vehicle's `WatermarkState`
(`hub.watermark_repository`), `advance`s it with what the batch handled, saves it, and after
the commit publishes the `Stored` messages `advance` asked for; a periodic sweep publishes
the ones that fell due later (`publish`). Contract 1.1 (docs/protocol.md, section 6.2).

**The watermark.** Per vehicle and per unit queue (`queue_id`, a counter of seqs),
`next_seq` means "every seq below this is handled": stored, or refused for good (a
duplicate, a filter drop, a dead letter). Seqs arrive out of order (live fixes first,
backlog after, several hubs), so seqs handled above `next_seq` are kept as ranges until the
gap below them fills. Some never arrive: the unit's full queue dropped them, or it let them
go at the broker's acknowledgement; a fix's `queue_floor` ("I hold nothing below this")
moves `next_seq` past those. A fix lost between the unit and the hub leaves a gap
`next_seq` cannot pass; the unit, which still holds it, sends it again.

**A new queue.** A fix of an unknown `queue_id` that is newer (by its own `ts`) than every
fix of the current queue means the unit's counter restarted (a new unit, a lost queue
file): the watermark starts afresh for it at once, and the old id is remembered
(`retired`) so that old fixes still in flight cannot switch it back; an unknown queue's
fix older than the current queue's newest is such an old fix, and changes nothing. The
unit only ever applies a watermark of its own queue id, so a mix-up (a new unit whose clock
is behind the old one's, say) costs that unit its acknowledgements until its clock passes
the old unit's last fix (it then lets fixes go at the broker's PUBACK), never a fix.

**Bounded.** At most `max_ranges` ranges above `next_seq`: past that the highest are
forgotten (their seqs look unhandled, the unit sends them again, they are handled again;
nothing is ever claimed that was not handled). At most `max_retired` old queue ids.

**When to publish** (a few percent of the telemetry's messages): at once for a new queue,
after `ack_every` of the vehicle's messages, when a gap closes (a backlog or a re-send
filled it), and when the unit sends fixes the watermark already covers (it missed a
publication); otherwise within `backlog_quiet_s` of a backlog message, within
`max_delay_s` of any advance, and every `gap_remind_s` while the vehicle, still sending,
is stuck at a gap (the reminder tells the unit to send the gap again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Final, NamedTuple

from protocol.schema import MAX_BIGINT
from protocol.stored import FixRef, Stored

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

Range = tuple[int, int]
"""Seqs `first` to `last`, both included."""

MS_PER_S: Final = 1000


@dataclass(frozen=True, slots=True)
class WatermarkPolicy:
    """When the hub publishes, and how much it remembers; see the module docstring."""

    # One publication per 16 of a car's messages keeps acks near 6% of the telemetry's
    # messages (the budget is 10%), and a unit's window of 64 unconfirmed messages
    # (vehicle_agent's `unconfirmed_window`) four times clear of a stall.
    ack_every: int = 16
    # A car parked and reporting once a minute is told every ten minutes: 10% of its
    # messages, and ten fixes held at most.
    max_delay: timedelta = timedelta(seconds=600)
    # A backlog is sent at several messages a second; five quiet seconds mean it is over,
    # and the unit may let all of it go.
    backlog_quiet: timedelta = timedelta(seconds=5)
    # A unit sends a gap again once the broker took it this long ago (its
    # `resend_after_s`, 120 s by default); a reminder as often prompts that check.
    gap_remind: timedelta = timedelta(seconds=120)
    # Answers to a new queue or to fixes sent again, at most this often per vehicle: a unit
    # (or an impostor) cannot make the hub publish once per message.
    min_interval: timedelta = timedelta(seconds=5)
    # Ranges of handled seqs kept above the watermark: a backlog drain needs one or two,
    # several hubs and a few losses a handful. 32 ranges are 512 bytes per vehicle.
    max_ranges: int = 32
    # Earlier queue ids remembered per vehicle, so their late fixes change nothing.
    max_retired: int = 4


@dataclass(slots=True)
class WatermarkState:
    """What the hub knows of one vehicle's current queue, as stored in the database.

    Mutable: `advance` moves it on in place, as it runs for every vehicle of every batch.
    """

    queue_id: int
    next_seq: int = 0
    # Handled seqs above `next_seq`: ascending, disjoint, never adjacent, none touching it.
    handled: tuple[Range, ...] = ()
    # The newest `ts` (the unit's clock, ms) of a handled fix of this queue.
    top_ts: int = 0
    retired: tuple[int, ...] = ()
    # The vehicle's telemetry messages since the last publication.
    messages_since: int = 0
    # The last `next_seq` published for this queue (None: none yet), and when.
    published_next: int | None = None
    published_at: datetime | None = None
    # When `next_seq` first moved past `published_next`; None when nothing is unpublished.
    advanced_at: datetime | None = None
    # When the next publication is due; None when none is.
    due_at: datetime | None = None

    @property
    def news(self) -> bool:
        """Whether the watermark moved since it was last published (or never was)."""
        return self.published_next is None or self.next_seq > self.published_next


@dataclass(slots=True)
class VehicleHandled:
    """What one batch handled of one vehicle: its fixes' references, and its messages."""

    refs: list[FixRef] = field(default_factory=list)
    messages: int = 0
    backlog_messages: int = 0


class HandledFixes:
    """Everything one batch handled, by vehicle; the intake adds, the batch's step reads.

    Memory is bounded by the batch: one small tuple per fix it received.
    """

    def __init__(self) -> None:
        self.by_vehicle: dict[str, VehicleHandled] = {}

    def add_message(self, vehicle_id: str, refs: Iterable[FixRef | None], *, backlog: bool) -> None:
        """Record one telemetry message's fixes (stored, filtered or dead-lettered alike).

        A message with no reference (a contract 1.0 unit) is not recorded: such a unit
        neither announces a queue nor reads storage acknowledgements.
        """
        known = [ref for ref in refs if ref is not None]
        if not known:
            return
        handled = self.by_vehicle.get(vehicle_id)
        if handled is None:
            handled = self.by_vehicle[vehicle_id] = VehicleHandled()
        handled.refs += known
        handled.messages += 1
        handled.backlog_messages += backlog


class Advance(NamedTuple):
    """A vehicle's state after a batch, and whether to publish it after the commit."""

    state: WatermarkState
    publish: bool


def advance(
    state: WatermarkState | None,
    handled: VehicleHandled,
    now: datetime,
    policy: WatermarkPolicy,
) -> Advance | None:
    """Fold a batch's handled fixes into a vehicle's state; None if the batch had none.

    Moves `state` on in place, or returns a new state when the unit's queue changed. When
    `publish` is true the state is already marked published at `now`: the caller saves it
    in the batch's transaction and publishes `stored_message(state, now)` after the commit.
    """
    refs = handled.refs
    if not refs:
        return None
    if state is not None and not state.handled:
        top_ts = _in_order(refs, state.queue_id, state.next_seq)
        if top_ts is not None:
            # The common case by far: the next fixes of the current queue, in order,
            # nothing pending. (A floor is at most its own fix's seq, so it cannot move the
            # watermark past the last of them.)
            state.next_seq = min(state.next_seq + len(refs), MAX_BIGINT)
            state.top_ts = max(state.top_ts, top_ts)
            state.messages_since += handled.messages
            return _settle(
                state,
                now,
                policy,
                below=0,
                gap_closed=False,
                backlog=handled.backlog_messages > 0,
            )
    current, new_queue, seqs, floor = _current_queue(state, refs, policy)
    if current is None:  # every fix came from a retired queue
        return None
    had_gap = bool(current.handled) and not new_queue
    below = sum(1 for seq in seqs if seq < current.next_seq)
    current.next_seq, current.handled = _fold(
        current.next_seq, current.handled, seqs, floor, policy.max_ranges
    )
    current.messages_since += handled.messages
    gap_closed = had_gap and not current.handled
    return _settle(
        current,
        now,
        policy,
        below=below,
        gap_closed=gap_closed,
        backlog=handled.backlog_messages > 0,
    )


def _in_order(refs: Sequence[FixRef], queue_id: int, next_seq: int) -> int | None:
    """The newest `ts` of `refs` if they are exactly `next_seq`, `next_seq + 1`... of the queue.

    None otherwise (another queue, a gap, a repeat, out of order): the general path decides.
    """
    top_ts = 0
    for expected, ref in enumerate(refs, start=next_seq):
        if ref.seq != expected or ref.queue_id != queue_id:
            return None
        top_ts = max(top_ts, ref.ts)
    return top_ts


def _settle(  # noqa: PLR0913 - keyword-only facts about one batch
    state: WatermarkState,
    now: datetime,
    policy: WatermarkPolicy,
    *,
    below: int,
    gap_closed: bool,
    backlog: bool,
) -> Advance:
    """Decide whether the moved state is published now, or when it will be."""
    news = state.news
    if news and state.advanced_at is None:
        state.advanced_at = now
    prompt = (
        state.published_next is None  # a new queue: tell the unit at once that we answer
        or (news and state.messages_since >= policy.ack_every)
        or (
            news and gap_closed and state.next_seq - (state.published_next or 0) >= policy.ack_every
        )
        or below > 0  # the unit sent again what the watermark covers: it missed a word
    )
    due_at = _due_at(state, now, policy, prompt=prompt, backlog=backlog)
    if due_at is not None and due_at <= now:
        return Advance(published(state, now), publish=True)
    state.due_at = due_at
    return Advance(state, publish=False)


def _current_queue(
    state: WatermarkState | None, refs: Sequence[FixRef], policy: WatermarkPolicy
) -> tuple[WatermarkState | None, bool, list[int], int | None]:
    """The state of the queue the batch ends on, its seqs in the batch, and the best floor.

    No state when every fix came from a retired queue.
    """
    current = state
    new_queue = False
    seqs: list[int] = []
    floor: int | None = None
    for ref in refs:
        if current is None or ref.queue_id != current.queue_id:
            if current is not None and (
                ref.queue_id in current.retired or ref.ts <= current.top_ts
            ):
                continue  # a late fix of a queue that was replaced: changes nothing
            current = _restarted(current, ref.queue_id, policy)
            new_queue = True
            seqs, floor = [], None
        seqs.append(ref.seq)
        current.top_ts = max(current.top_ts, ref.ts)
        if ref.floor is not None and (floor is None or ref.floor > floor):
            floor = ref.floor
    if not seqs:
        return None, False, seqs, floor
    return current, new_queue, seqs, floor


def _restarted(
    old: WatermarkState | None, queue_id: int, policy: WatermarkPolicy
) -> WatermarkState:
    """A fresh watermark for a new queue of the vehicle, remembering the old queue's id."""
    if old is None:
        return WatermarkState(queue_id=queue_id)
    retired = (old.queue_id, *old.retired)[: policy.max_retired]
    # Keeps the time of the last publication: the answer to a new queue is rate-limited
    # like any other, so a unit changing ids on every message gains nothing.
    return WatermarkState(queue_id=queue_id, retired=retired, published_at=old.published_at)


def _fold(
    next_seq: int,
    ranges: tuple[Range, ...],
    seqs: list[int],
    floor: int | None,
    max_ranges: int,
) -> tuple[int, tuple[Range, ...]]:
    """The watermark and ranges once `seqs` are handled and nothing below `floor` is owed."""
    if floor is not None and floor > next_seq:
        next_seq = floor
    merged = _merge(ranges, _runs(sorted(seq for seq in seqs if seq >= next_seq)))
    kept: list[Range] = []
    for first, last in merged:
        if last < next_seq:
            continue
        if first <= next_seq:
            # A seq of MAX_BIGINT cannot be passed: next_seq must fit a bigint too.
            next_seq = min(last + 1, MAX_BIGINT)
            continue
        kept.append((first, last))
    # Past the cap the highest ranges are forgotten: safe, as they are only re-sent.
    return next_seq, tuple(kept[:max_ranges])


def _runs(ordered: list[int]) -> list[Range]:
    """Sorted seqs (repeats allowed) as ranges of consecutive seqs."""
    runs: list[Range] = []
    for seq in ordered:
        if runs and seq <= runs[-1][1] + 1:
            if seq > runs[-1][1]:
                runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _merge(left: Sequence[Range], right: Sequence[Range]) -> list[Range]:
    """The union of two sorted lists of ranges, adjacent ranges joined."""
    merged: list[Range] = []
    for first, last in sorted((*left, *right)):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _due_at(
    state: WatermarkState,
    now: datetime,
    policy: WatermarkPolicy,
    *,
    prompt: bool,
    backlog: bool,
) -> datetime | None:
    """When the next publication is due (possibly `now`), or None."""
    due = state.due_at  # what was due stays due until published
    if prompt:
        due = _earliest(due, _not_before(state, now, policy))
    if state.advanced_at is not None:  # news not yet published
        due = _earliest(due, state.advanced_at + policy.max_delay)
        if backlog:
            due = _earliest(due, now + policy.backlog_quiet)
    if state.handled and state.messages_since:
        # Anchored at the first batch that finds the vehicle at a gap (what is due stays
        # due): a gap that closes within `gap_remind`, as a backlog's does, costs nothing.
        due = _earliest(due, now + policy.gap_remind)
    return due


def _earliest(due: datetime | None, candidate: datetime) -> datetime:
    return candidate if due is None or candidate < due else due


def _not_before(state: WatermarkState, now: datetime, policy: WatermarkPolicy) -> datetime:
    """`now`, unless the vehicle was told something less than `min_interval` ago."""
    if state.published_at is None or (state.news and state.messages_since >= policy.ack_every):
        return now  # the message-count rule is its own rate limit
    return max(now, state.published_at + policy.min_interval)


def published(state: WatermarkState, now: datetime) -> WatermarkState:
    """Mark a state's watermark published at `now` (by a batch or by the sweep); return it.

    Nothing is due after that; a vehicle stuck at a gap is reminded `gap_remind` later if
    it keeps sending (the next batch's `advance` schedules that).
    """
    state.published_next = state.next_seq
    state.published_at = now
    state.messages_since = 0
    state.advanced_at = None
    state.due_at = None
    return state


def is_due(state: WatermarkState, now: datetime) -> bool:
    """Whether the sweep should publish this state now."""
    return state.due_at is not None and state.due_at <= now


def stored_message(state: WatermarkState, now: datetime) -> Stored:
    """The `stored` message that publishes a state's watermark."""
    return Stored(
        queue_id=state.queue_id,
        next_seq=state.next_seq,
        ts=max(1, int(now.timestamp() * MS_PER_S)),
    )
