"""Batching by size or time, the producer's memory bound, presence merging."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from hub.batch import Batch, Batcher, Presence


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def add(batcher: Batcher, fixes: int = 1) -> Batch:
    batch = batcher.acquire()
    assert batch is not None
    batch.messages += 1
    batch.fixes += fixes
    batcher.release(batch)
    return batch


def test_a_batch_is_taken_when_full() -> None:
    batcher = Batcher(max_fixes=3, max_messages=100, max_delay_s=10)
    add(batcher)
    add(batcher)
    assert batcher.take(0) is None
    full = add(batcher)
    assert batcher.take(0) is full
    assert batcher.take(0) is None


def test_a_batch_is_taken_when_too_many_messages_wait_for_acks() -> None:
    batcher = Batcher(max_fixes=1000, max_messages=2, max_delay_s=10)
    add(batcher, fixes=0)
    first = add(batcher, fixes=0)
    assert batcher.take(0) is first


def test_a_batch_is_taken_when_its_first_message_is_due() -> None:
    clock = Clock()
    batcher = Batcher(max_fixes=1000, max_messages=1000, max_delay_s=0.2, clock=clock)
    batch = add(batcher)
    clock.now += 0.1
    add(batcher)
    assert batcher.take(0) is None
    clock.now += 0.15
    assert batcher.take(0) is batch
    assert batch.messages == 2


def test_take_waits_for_a_batch_to_fill() -> None:
    batcher = Batcher(max_fixes=2, max_messages=100, max_delay_s=60)
    add(batcher)
    threading.Timer(0.05, add, (batcher,)).start()
    taken = batcher.take(10)
    assert taken is not None
    assert taken.fixes == 2


def test_closing_hands_over_the_rest_and_refuses_more() -> None:
    batcher = Batcher(max_fixes=100, max_messages=100, max_delay_s=60)
    rest = add(batcher)
    batcher.close()
    assert batcher.acquire() is None
    assert batcher.take(10) is rest
    assert batcher.take(10) is None


def test_the_producer_blocks_at_the_hard_cap_until_the_writer_takes() -> None:
    batcher = Batcher(max_fixes=2, max_messages=100, max_delay_s=60)
    add(batcher, fixes=batcher.hard_cap_fixes)
    added = threading.Event()

    def produce() -> None:
        add(batcher)
        added.set()

    producer = threading.Thread(target=produce)
    producer.start()
    # Blocked: the current batch is at the hard cap (bounded wait, then the check).
    assert not added.wait(0.3)
    assert batcher.take(0) is not None
    assert added.wait(10)
    producer.join(10)
    batcher.close()
    follow_up = batcher.take(0)
    assert follow_up is not None
    assert follow_up.fixes == 1


def test_a_blocked_producer_gives_up_when_closed() -> None:
    batcher = Batcher(max_fixes=1, max_messages=100, max_delay_s=60)
    add(batcher, fixes=2)
    result: list[Batch | None] = []
    producer = threading.Thread(target=lambda: result.append(batcher.acquire()))
    producer.start()
    batcher.close()
    producer.join(10)
    assert result == [None]


def test_presence_keeps_the_latest_sighting_and_evidence() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch = Batch()
    batch.saw("car", t0, online=True, online_at=t0)
    batch.saw("car", t0 + timedelta(seconds=2), online=False, online_at=t0 + timedelta(seconds=1))
    # Older evidence arriving later does not win; a sighting without evidence changes none.
    batch.saw("car", t0 + timedelta(seconds=3), online=True, online_at=t0)
    batch.saw("car", t0 + timedelta(seconds=1))
    assert batch.presence["car"] == Presence(
        seen_at=t0 + timedelta(seconds=3), online=False, online_at=t0 + timedelta(seconds=1)
    )
    batch.saw("van", t0)
    assert batch.presence["van"] == Presence(seen_at=t0, online=None, online_at=None)
