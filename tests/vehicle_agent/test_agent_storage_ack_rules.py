"""The agent's storage-acknowledgement rules, without a broker: modes, window, gaps, fallback."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.stored import Stored
from vehicle_agent.storage_acks import Mode, StorageAcks

QUEUE = 77
TIMEOUT, SILENCE, WINDOW, RESEND = 100.0, 1000.0, 4, 50.0


def acks(policy: Any = "auto") -> StorageAcks:
    return StorageAcks(
        policy=policy,
        queue_id=QUEUE,
        timeout_s=TIMEOUT,
        silence_s=SILENCE,
        window=WINDOW,
        resend_after_s=RESEND,
    )


def stored(next_seq: int, queue_id: int = QUEUE) -> Stored:
    return Stored(queue_id=queue_id, next_seq=next_seq, ts=1)


def test_broker_policy_is_contract_1_0() -> None:
    rules = acks("broker")
    assert rules.mode is Mode.BROKER
    assert not rules.announces
    assert rules.delivered(0, 5, now=0.0)
    assert all(rules.window_open(in_flight) for in_flight in range(100))
    assert rules.fallback_at() is None


def test_auto_holds_fixes_then_falls_back_when_the_hub_never_answers() -> None:
    rules = acks()
    assert rules.announces
    assert rules.fallback_at() is None  # nothing waits yet
    assert not rules.delivered(0, 0, now=10.0)
    assert not rules.delivered(1, 1, now=20.0)
    assert rules.fallback_at() == 10.0 + TIMEOUT
    assert not rules.check(10.0 + TIMEOUT - 1)
    assert rules.check(10.0 + TIMEOUT)
    assert rules.mode is Mode.BROKER
    assert rules.delivered(2, 2, now=200.0)  # from now on fixes go at their PUBACK
    assert rules.fallback_at() is None


def test_before_the_hub_answers_the_window_does_not_stop_reporting() -> None:
    rules = acks()
    for seq in range(3 * WINDOW):
        rules.delivered(seq, seq, now=1.0)
    assert rules.window_open(0)
    rules.stored(stored(0), last_seq=100, confirmed_next=None, now=2.0)
    assert not rules.window_open(0)


def test_the_window_counts_unconfirmed_and_in_flight_messages() -> None:
    rules = acks("hub")
    rules.stored(stored(0), last_seq=100, confirmed_next=None, now=0.0)
    for seq in range(WINDOW - 1):
        rules.delivered(seq * 10, seq * 10 + 9, now=1.0)
    assert rules.window_open(0)
    assert not rules.window_open(1)
    verdict = rules.stored(stored(10), last_seq=100, confirmed_next=0, now=2.0)
    assert verdict.confirm == 10
    assert rules.unconfirmed == WINDOW - 2
    assert rules.window_open(1)


def test_a_stored_message_confirms_only_news_of_this_queue() -> None:
    rules = acks()
    rules.delivered(0, 9, now=0.0)
    assert rules.stored(stored(5), last_seq=9, confirmed_next=None, now=1.0).confirm == 5
    assert rules.stored(stored(5), last_seq=9, confirmed_next=5, now=1.0).confirm is None
    assert rules.stored(stored(3), last_seq=9, confirmed_next=5, now=1.0).confirm is None
    # A queue starting afresh: the hub's first word (nothing handled yet) is worth keeping.
    assert rules.stored(stored(0), last_seq=9, confirmed_next=None, now=1.0).confirm == 0


def test_an_older_queues_acknowledgement_is_never_applied() -> None:
    rules = acks()
    verdict = rules.stored(
        stored(10**6, queue_id=QUEUE + 1), last_seq=5, confirmed_next=None, now=1.0
    )
    assert verdict.confirm is None
    assert verdict.ignored == "for another queue of this vehicle"
    assert not rules.heard  # a word about an earlier queue says nothing of today's hub


def test_an_acknowledgement_beyond_the_newest_fix_is_ignored() -> None:
    rules = acks()
    assert rules.stored(stored(11), last_seq=9, confirmed_next=None, now=1.0).confirm is None
    assert rules.stored(stored(1), last_seq=None, confirmed_next=None, now=1.0).confirm is None
    assert not rules.heard  # such a word is no proof that the hub answers
    assert rules.stored(stored(10), last_seq=9, confirmed_next=None, now=1.0).confirm == 10
    assert rules.heard
    # A queue with no fix yet may hear that nothing is handled yet.
    fresh = acks()
    assert fresh.stored(stored(0), last_seq=None, confirmed_next=None, now=1.0).confirm == 0
    assert fresh.heard


def test_a_hub_heard_gets_the_longer_silence() -> None:
    rules = acks()
    rules.stored(stored(0), last_seq=10, confirmed_next=None, now=5.0)
    rules.delivered(1, 1, now=10.0)  # seq 0 is backlog of this connection, still to go
    assert rules.fallback_at() == 10.0 + SILENCE
    rules.stored(stored(0), last_seq=10, confirmed_next=0, now=500.0)  # no news, but alive
    assert rules.fallback_at() == 500.0 + SILENCE


def test_the_first_acknowledgement_ends_broker_mode() -> None:
    rules = acks()
    rules.delivered(0, 0, now=0.0)
    assert rules.check(TIMEOUT)
    assert rules.mode is Mode.BROKER
    rules.stored(stored(1), last_seq=3, confirmed_next=None, now=TIMEOUT + 1)
    assert rules.mode is Mode.HUB
    assert not rules.delivered(2, 2, now=TIMEOUT + 2)


def test_the_hub_policy_never_falls_back() -> None:
    rules = acks("hub")
    rules.delivered(0, 0, now=0.0)
    assert rules.fallback_at() is None
    assert not rules.check(10**9)
    assert not rules.subscription_refused()
    assert rules.mode is Mode.HUB


def test_a_refused_subscription_means_broker_mode_at_once_under_auto() -> None:
    rules = acks()
    assert rules.subscription_refused()
    assert rules.mode is Mode.BROKER
    assert not rules.subscription_refused()  # already there


def test_a_fix_the_hub_still_lacks_long_after_the_broker_took_it_is_sent_again() -> None:
    rules = acks("hub")
    rules.delivered(0, 4, now=0.0)
    rules.delivered(5, 5, now=1.0)  # lost on the way
    rules.delivered(6, 9, now=2.0)
    early = rules.stored(stored(5), last_seq=9, confirmed_next=None, now=RESEND)
    assert (early.confirm, early.resend) == (5, False)  # not yet: it may be on its way
    late = rules.stored(stored(5), last_seq=9, confirmed_next=5, now=1.0 + RESEND)
    assert (late.confirm, late.resend) == (None, True)
    assert rules.unconfirmed == 0  # everything queued goes again, as backlog


def test_a_message_the_hub_covered_before_its_puback_waits_for_nothing() -> None:
    rules = acks()
    rules.stored(stored(10), last_seq=20, confirmed_next=None, now=0.0)
    assert not rules.delivered(5, 9, now=1.0, confirmed_next=10)
    assert rules.unconfirmed == 0
    assert rules.fallback_at() is None  # nothing waits for the hub
    assert not rules.delivered(9, 10, now=1.0, confirmed_next=10)
    assert rules.unconfirmed == 1


def test_a_gap_not_sent_on_this_connection_is_backlog_still_to_come() -> None:
    rules = acks("hub")
    rules.delivered(20, 20, now=0.0)  # a live fix; 5..19 are backlog of this connection
    verdict = rules.stored(stored(5), last_seq=20, confirmed_next=None, now=10 * RESEND)
    assert not verdict.resend


def test_a_new_connection_forgets_the_last_ones_messages_and_restarts_the_clock() -> None:
    rules = acks()
    rules.delivered(0, 3, now=0.0)
    rules.connected(now=500.0)
    assert rules.unconfirmed == 0
    assert rules.fallback_at() == 500.0 + TIMEOUT
    assert not rules.check(500.0 + TIMEOUT - 1)


@pytest.mark.parametrize(
    ("floor", "confirmed_next", "policy", "announced"),
    [
        (5, 5, "hub", None),
        (5, 7, "hub", None),
        (8, 5, "hub", 8),
        (0, None, "hub", None),  # a new queue, nothing let go
        (5, None, "hub", 5),  # a new queue whose full queue dropped 0..4 already
        (5, None, "broker", None),  # never answered, in broker mode: an older hub
    ],
)
def test_the_floor_is_announced_only_above_what_the_hub_waits_for(
    floor: int, confirmed_next: int | None, policy: Any, announced: int | None
) -> None:
    assert acks(policy).floor_to_announce(floor, confirmed_next) == announced


def test_the_floor_is_announced_in_broker_mode_once_the_hub_answered() -> None:
    rules = acks()
    rules.delivered(0, 0, now=0.0)
    rules.check(TIMEOUT)  # fell back: fixes go at their PUBACK, the hub loses track
    assert rules.mode is Mode.BROKER
    assert rules.floor_to_announce(8, 5) == 8


def test_a_hub_that_went_back_hears_the_floor_again() -> None:
    """The hub's database restored from a backup: it waits for fixes long confirmed."""
    rules = acks("hub")
    rules.stored(stored(100), last_seq=120, confirmed_next=None, now=0.0)
    assert rules.floor_to_announce(100, 100) is None
    verdict = rules.stored(stored(40), last_seq=120, confirmed_next=100, now=1.0)
    assert verdict.confirm is None  # nothing comes back to the queue
    assert rules.floor_to_announce(100, 100) == 100


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("deliver"), st.integers(0, 30), st.integers(0, 5)),
            st.tuples(st.just("stored"), st.integers(0, 40), st.integers(0, 1)),
            st.tuples(st.just("tick"), st.integers(0, 300), st.just(0)),
            st.tuples(st.just("connect"), st.just(0), st.just(0)),
        ),
        max_size=60,
    )
)
def test_nothing_is_confirmed_that_the_hub_did_not_name(
    events: list[tuple[str, int, int]],
) -> None:
    """Whatever happens, a confirmation is a `next_seq` the hub sent for this very queue,
    never beyond the newest seq, and never lower than one already confirmed."""
    rules = acks()
    now, last_seq = 0.0, 30
    confirmed: int | None = None
    for kind, number, other in events:
        now += 1.0
        if kind == "deliver":
            rules.delivered(number, number + other, now=now)
        elif kind == "stored":
            queue_id = QUEUE if other == 0 else QUEUE + 1
            verdict = rules.stored(
                stored(number, queue_id), last_seq=last_seq, confirmed_next=confirmed, now=now
            )
            if verdict.confirm is not None:
                assert queue_id == QUEUE
                assert verdict.confirm <= last_seq + 1
                assert confirmed is None or verdict.confirm > confirmed
                confirmed = verdict.confirm
        elif kind == "tick":
            now += number
            rules.check(now)
        else:
            rules.connected(now=now)
        assert rules.unconfirmed <= len(events)
        if rules.heard and rules.mode is Mode.HUB:
            # Once the hub answers, the messages waiting for it stay within the window
            # as long as the sender asks before each one (here, deliveries ignore it).
            assert rules.window_open(0) == (rules.unconfirmed < WINDOW)
