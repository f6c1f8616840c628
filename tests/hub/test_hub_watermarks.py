"""The storage watermark's rules, pure: advancing, gaps, floors, new queues, bounds, timing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.watermarks import (
    HandledFixes,
    VehicleHandled,
    WatermarkPolicy,
    WatermarkState,
    advance,
    is_due,
    published,
    stored_message,
)
from protocol.schema import MAX_BIGINT
from protocol.stored import FixRef

if TYPE_CHECKING:
    import random

POLICY = WatermarkPolicy()
T0 = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
QUEUE = 7


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# The unit's clock at seq 0 of a queue: a fix's ts is this plus a second per seq.
BORN_MS = int(T0.timestamp() * 1000)


def batch(
    *seqs: int,
    queue_id: int = QUEUE,
    floor: int | None = None,
    backlog: bool = False,
    messages: int | None = None,
    born_ms: int = BORN_MS,
) -> VehicleHandled:
    """One vehicle's share of a batch: these seqs, one message each unless told."""
    refs = [
        FixRef(
            queue_id,
            seq,
            born_ms + 1000 * seq,
            floor if floor is not None and floor <= seq else None,
        )
        for seq in seqs
    ]
    count = len(seqs) if messages is None else messages
    return VehicleHandled(refs, count, count if backlog else 0)


def settled(next_seq: int, **changes: object) -> WatermarkState:
    """A state whose watermark was published a while ago, with nothing pending."""
    state = WatermarkState(
        queue_id=QUEUE, next_seq=next_seq, published_next=next_seq, published_at=at(-3600)
    )
    return replace(state, **changes)  # type: ignore[arg-type]


def test_the_first_fix_of_a_new_queue_is_answered_at_once() -> None:
    result = advance(None, batch(0), at(0), POLICY)
    assert result is not None
    assert result.publish
    assert (result.state.next_seq, result.state.published_next) == (1, 1)
    assert stored_message(result.state, at(0)).model_dump() == {
        "v": 1,
        "queue_id": QUEUE,
        "next_seq": 1,
        "ts": int(at(0).timestamp() * 1000),
    }


def test_in_order_fixes_are_published_every_ack_every_messages() -> None:
    state = settled(100)
    published_at = []
    for seq in range(100, 100 + 3 * POLICY.ack_every):
        result = advance(state, batch(seq), at(seq), POLICY)
        assert result is not None
        state = result.state
        if result.publish:
            published_at.append(state.published_next)
    assert published_at == [116, 132, 148]
    assert state.next_seq == 148


def test_an_advance_is_published_within_the_max_delay() -> None:
    state = settled(10)
    result = advance(state, batch(10), at(0), POLICY)
    assert result is not None
    assert not result.publish
    assert result.state.due_at == at(0) + POLICY.max_delay
    result = advance(result.state, batch(11), at(30), POLICY)
    assert result is not None
    assert result.state.due_at == at(0) + POLICY.max_delay  # the first advance counts
    assert not is_due(result.state, at(599))
    assert is_due(result.state, at(600))
    told = published(result.state, at(600))
    assert (told.published_next, told.due_at, told.messages_since) == (12, None, 0)


def test_live_first_then_backlog_leaves_a_gap_that_closes_with_a_prompt_word() -> None:
    state = settled(100)
    result = advance(state, batch(150, 151), at(0), POLICY)  # live fixes after a reconnect
    assert result is not None
    assert result.state.next_seq == 100
    assert result.state.handled == ((150, 151),)
    result = advance(result.state, batch(*range(100, 120), backlog=True, messages=1), at(1), POLICY)
    assert result is not None
    assert result.state.next_seq == 120
    assert not result.publish  # the backlog goes on: wait for more of it
    assert result.state.due_at == at(1) + POLICY.backlog_quiet
    result = advance(result.state, batch(*range(120, 150), backlog=True, messages=1), at(2), POLICY)
    assert result is not None
    assert result.publish  # the gap closed: the unit may let the whole backlog go
    assert result.state.next_seq == 152
    assert result.state.handled == ()


def test_a_backlog_without_live_fixes_is_told_once_it_goes_quiet() -> None:
    result = advance(settled(0), batch(*range(50), backlog=True, messages=1), at(0), POLICY)
    assert result is not None
    assert not result.publish
    assert is_due(result.state, at(0) + POLICY.backlog_quiet)


def test_a_floor_passes_the_seqs_the_unit_let_go() -> None:
    state = settled(10)
    # The unit's full queue dropped 10..39; its fix 40 says it holds nothing below 40.
    result = advance(state, batch(41, 40, floor=40), at(0), POLICY)
    assert result is not None
    assert result.state.next_seq == 42
    assert result.state.handled == ()


def test_a_floor_below_the_watermark_changes_nothing() -> None:
    result = advance(settled(50), batch(60, floor=5), at(0), POLICY)
    assert result is not None
    assert (result.state.next_seq, result.state.handled) == (50, ((60, 60),))


def test_a_new_queue_restarts_the_watermark_and_old_fixes_cannot_switch_it_back() -> None:
    old = settled(5000, retired=(1, 2, 3, 4), top_ts=BORN_MS + 1000 * 4999)
    # A new unit (or a lost queue file): its counter starts again, after the old one's fixes.
    result = advance(old, batch(0, 1, queue_id=99, born_ms=BORN_MS + 1000 * 5000), at(0), POLICY)
    assert result is not None
    state = result.state
    assert (state.queue_id, state.next_seq, state.published_next) == (99, 2, 2)
    assert result.publish  # at once, so the unit learns the hub answers
    assert state.retired == (QUEUE, 1, 2, 3)  # the oldest forgotten
    late = advance(state, batch(5000, 5001), at(10), POLICY)  # in flight from the old unit
    assert late is None
    assert (state.queue_id, state.next_seq) == (99, 2)


def test_a_batch_that_switches_queues_ends_on_the_last_one() -> None:
    mixed = VehicleHandled(
        [
            FixRef(1, 10, 100, None),
            FixRef(2, 0, 101, None),
            FixRef(1, 11, 102, None),
            FixRef(2, 1, 103, None),
        ],
        4,
        0,
    )
    result = advance(None, mixed, at(0), POLICY)
    assert result is not None
    # Queue 1 came first and was replaced by 2; its later fix 11 is ignored.
    assert (result.state.queue_id, result.state.next_seq, result.state.retired) == (2, 2, (1,))


def test_an_old_queues_late_fix_never_seen_before_changes_nothing() -> None:
    """Found by the end-to-end property test: a new queue first, then the old one's fix."""
    result = advance(None, batch(0, queue_id=2, born_ms=BORN_MS + 60_000), at(0), POLICY)
    assert result is not None
    late = advance(result.state, batch(0, queue_id=1), at(1), POLICY)  # taken a minute before
    assert late is None
    assert (result.state.queue_id, result.state.retired) == (2, ())


def test_a_unit_changing_queues_on_every_message_is_not_answered_every_time() -> None:
    state: WatermarkState | None = None
    publications = 0
    for second in range(60):
        result = advance(
            state,
            batch(0, queue_id=1000 + second, born_ms=BORN_MS + 1000 * second),
            at(second),
            POLICY,
        )
        assert result is not None
        state = result.state
        publications += result.publish
    seconds_per_word = POLICY.min_interval.total_seconds()
    assert publications <= 60 / seconds_per_word + 1


def test_fixes_sent_again_below_the_watermark_get_an_answer() -> None:
    result = advance(settled(100, published_at=at(-60)), batch(90, 91), at(0), POLICY)
    assert result is not None
    assert result.publish  # the unit missed the last word: say it again
    assert result.state.next_seq == 100
    again = advance(result.state, batch(92), at(1), POLICY)
    assert again is not None
    assert not again.publish  # but not more often than min_interval
    assert again.state.due_at == at(0) + POLICY.min_interval


def test_a_vehicle_stuck_at_a_gap_is_reminded_while_it_keeps_sending() -> None:
    result = advance(settled(100), batch(102), at(0), POLICY)
    assert result is not None
    assert not result.publish  # a gap may be a backlog still on its way
    assert result.state.due_at == at(0) + POLICY.gap_remind
    result = advance(result.state, batch(103), at(60), POLICY)
    assert result is not None
    assert result.state.due_at == at(0) + POLICY.gap_remind  # anchored at the first
    told = published(result.state, at(120))
    assert told.due_at is None  # a silent vehicle is not reminded again and again
    result = advance(told, batch(104), at(130), POLICY)
    assert result is not None
    assert result.state.due_at == at(130) + POLICY.gap_remind


def test_ranges_above_the_watermark_are_capped_by_forgetting_the_highest() -> None:
    policy = WatermarkPolicy(max_ranges=3)
    result = advance(settled(0), batch(10, 20, 30, 40, 50), at(0), policy)
    assert result is not None
    assert result.state.handled == ((10, 10), (20, 20), (30, 30))
    result = advance(result.state, batch(*range(10)), at(1), policy)
    assert result is not None
    assert result.state.next_seq == 11  # 40 and 50 look unhandled: the unit sends them again


def test_the_largest_seq_cannot_overflow_the_watermark() -> None:
    result = advance(settled(MAX_BIGINT - 1), batch(MAX_BIGINT - 1, MAX_BIGINT), at(0), POLICY)
    assert result is not None
    assert result.state.next_seq == MAX_BIGINT


def test_the_handled_fixes_of_a_batch_skip_units_without_a_queue() -> None:
    handled = HandledFixes()
    handled.add_message("car-1", [FixRef(1, 5, 5, None)], backlog=False)
    handled.add_message("car-1", [FixRef(1, 6, 6, None), FixRef(1, 7, 7, 6)], backlog=True)
    handled.add_message("car-2", [None, None], backlog=False)  # contract 1.0
    assert set(handled.by_vehicle) == {"car-1"}
    assert handled.by_vehicle["car-1"] == VehicleHandled(
        [FixRef(1, 5, 5, None), FixRef(1, 6, 6, None), FixRef(1, 7, 7, 6)], 2, 1
    )


# --- properties -------------------------------------------------------------------------

refs = st.builds(
    lambda queue, seq, ts, floor_gap: FixRef(
        queue, seq, ts, None if floor_gap is None else max(0, seq - floor_gap)
    ),
    st.sampled_from([1, 1, 1, 2, 3]),
    st.integers(0, 60),
    st.integers(1, 200),
    st.none() | st.integers(0, 60),
)


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(
        st.tuples(st.lists(refs, min_size=1, max_size=8), st.integers(0, 400)), max_size=25
    ),
    max_ranges=st.integers(1, 6),
)
def test_the_watermark_never_covers_a_seq_not_handled_nor_given_up(
    batches: list[tuple[list[FixRef], int]], max_ranges: int
) -> None:
    """Soundness, bounds, order; and a unit sending from the gap always gets through."""
    policy = WatermarkPolicy(max_ranges=max_ranges)
    state: WatermarkState | None = None
    handled: dict[int, set[int]] = {}  # queue id -> seqs handled
    floors: dict[int, int] = {}  # queue id -> highest floor seen
    now = T0
    for batch_refs, seconds in batches:
        now += timedelta(seconds=seconds)
        before = None if state is None else (state.queue_id, state.next_seq)
        result = advance(state, VehicleHandled(list(batch_refs), len(batch_refs), 0), now, policy)
        for ref in batch_refs:
            handled.setdefault(ref.queue_id, set()).add(ref.seq)
            if ref.floor is not None:
                floors[ref.queue_id] = max(floors.get(ref.queue_id, 0), ref.floor)
        if result is None:
            continue
        state = result.state
        if state.due_at is not None and is_due(state, now):
            published(state, now)
        queue_seqs = handled[state.queue_id]
        floor = floors.get(state.queue_id, 0)
        # Sound: below the watermark, each seq was handled or is below a floor the unit sent.
        assert all(seq in queue_seqs or seq < floor for seq in range(state.next_seq))
        # Ranges: ascending, disjoint, not adjacent, above the watermark, bounded, handled.
        assert len(state.handled) <= max_ranges
        last = state.next_seq
        for first, end in state.handled:
            assert last < first <= end
            assert all(seq in queue_seqs for seq in range(first, end + 1))
            last = end + 1
        if before is not None and before[0] == state.queue_id:
            assert state.next_seq >= before[1]
        assert len(state.retired) <= policy.max_retired
        assert state.queue_id not in state.retired
    if state is not None:
        # Live: the unit sends everything from the gap again, in order, and gets through.
        target = state.next_seq + 70
        for seq in range(state.next_seq, target):
            result = advance(
                state,
                VehicleHandled([FixRef(state.queue_id, seq, state.top_ts, None)], 1, 0),
                now,
                policy,
            )
            assert result is not None
            state = result.state
        assert state.next_seq == target


@settings(max_examples=100, deadline=None)
@given(rate_s=st.sampled_from([0.1, 1.0, 5.0, 60.0]), minutes=st.integers(30, 120))
def test_publications_stay_within_a_tenth_of_the_messages(rate_s: float, minutes: int) -> None:
    """A car reporting every `rate_s` seconds, in order, swept every 10 s as the hub would."""
    state: WatermarkState | None = None
    messages = publications = seq = 0
    now = T0
    sweep_at = T0
    end = T0 + timedelta(minutes=minutes)
    while now < end:
        ref = FixRef(QUEUE, seq, BORN_MS + seq, None)
        result = advance(state, VehicleHandled([ref], 1, 0), now, POLICY)
        assert result is not None
        state = result.state
        messages += 1
        seq += 1
        publications += result.publish
        now += timedelta(seconds=rate_s)
        while sweep_at <= now:
            if is_due(state, sweep_at):
                published(state, sweep_at)
                publications += 1
            sweep_at += timedelta(seconds=10)
    assert publications <= messages / 10 + 1
    assert state is not None
    # And the unit never waits long for its word: at most max_delay behind.
    assert state.published_next is not None
    unpublished = state.next_seq - state.published_next
    assert unpublished <= max(POLICY.ack_every, POLICY.max_delay.total_seconds() / rate_s + 1)


@settings(max_examples=300, deadline=None)
@given(
    next_seq=st.integers(0, 1000),
    count=st.integers(1, 40),
    messages_since=st.integers(0, 30),
    published_ago_s=st.none() | st.integers(0, 900),
    backlog=st.booleans(),
    floors=st.booleans(),
    shuffle=st.randoms(use_true_random=False),
)
def test_fixes_in_order_take_the_short_way_to_the_same_state(  # noqa: PLR0917 - drawn values
    next_seq: int,
    count: int,
    messages_since: int,
    published_ago_s: int | None,
    backlog: bool,
    floors: bool,
    shuffle: random.Random,
) -> None:
    """The common case's short cut decides exactly as the general rules do."""
    published_at = None if published_ago_s is None else at(-published_ago_s)
    state = WatermarkState(
        queue_id=QUEUE,
        next_seq=next_seq,
        top_ts=BORN_MS + 1000 * next_seq,
        messages_since=messages_since,
        published_next=None if published_at is None else next_seq,
        published_at=published_at,
    )
    seqs = list(range(next_seq, next_seq + count))
    in_order = batch(*seqs, backlog=backlog, floor=next_seq if floors else None)
    mixed = replace(in_order, refs=shuffle.sample(in_order.refs, len(in_order.refs)))
    if count > 1 and mixed.refs == in_order.refs:
        mixed.refs.reverse()  # out of order for sure: the general rules decide
    short = advance(replace(state), in_order, at(0), POLICY)
    general = advance(replace(state), mixed, at(0), POLICY)
    assert short == general
