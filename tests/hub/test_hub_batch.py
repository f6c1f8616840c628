"""Batching by size or time, the producer's memory bound, presence merging."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta

from hub.batch import DEAD_LETTER_PAYLOAD_LIMIT, Batch, Batcher, DeadLetter, Presence

MB = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def add(batcher: Batcher, fixes: int = 1, size: int = 100) -> Batch:
    batch = batcher.acquire()
    assert batch is not None
    batch.messages += 1
    batch.fixes += fixes
    batch.bytes += size
    batcher.release(batch)
    return batch


def test_a_batch_is_taken_when_full() -> None:
    batcher = Batcher(max_fixes=3, max_messages=100, max_delay_s=10, max_bytes=MB)
    add(batcher)
    add(batcher)
    assert batcher.take(0) is None
    full = add(batcher)
    assert batcher.take(0) is full
    assert batcher.take(0) is None


def test_a_batch_is_taken_when_too_many_messages_wait_for_acks() -> None:
    batcher = Batcher(max_fixes=1000, max_messages=2, max_delay_s=10, max_bytes=MB)
    add(batcher, fixes=0)
    first = add(batcher, fixes=0)
    assert batcher.take(0) is first


def test_a_batch_is_taken_when_its_first_message_is_due() -> None:
    clock = Clock()
    batcher = Batcher(max_fixes=1000, max_messages=1000, max_delay_s=0.2, max_bytes=MB, clock=clock)
    batch = add(batcher)
    clock.now += 0.1
    add(batcher)
    assert batcher.take(0) is None
    clock.now += 0.15
    assert batcher.take(0) is batch
    assert batch.messages == 2


def test_take_waits_for_a_batch_to_fill() -> None:
    batcher = Batcher(max_fixes=2, max_messages=100, max_delay_s=60, max_bytes=MB)
    add(batcher)
    threading.Timer(0.05, add, (batcher,)).start()
    taken = batcher.take(10)
    assert taken is not None
    assert taken.fixes == 2


def test_closing_hands_over_the_rest_and_refuses_more() -> None:
    batcher = Batcher(max_fixes=100, max_messages=100, max_delay_s=60, max_bytes=MB)
    rest = add(batcher)
    batcher.close()
    assert batcher.acquire() is None
    assert batcher.take(10) is rest
    assert batcher.take(10) is None


def test_the_producer_blocks_at_the_hard_cap_until_the_writer_takes() -> None:
    batcher = Batcher(max_fixes=2, max_messages=100, max_delay_s=60, max_bytes=MB)
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
    batcher = Batcher(max_fixes=1, max_messages=100, max_delay_s=60, max_bytes=MB)
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


def test_a_batch_is_taken_when_its_payloads_reach_the_byte_limit() -> None:
    batcher = Batcher(max_fixes=1000, max_messages=1000, max_delay_s=10, max_bytes=MB)
    add(batcher, fixes=0, size=MB // 2)
    assert batcher.take(0) is None
    full = add(batcher, fixes=0, size=MB // 2)
    assert batcher.take(0) is full


def test_the_producer_blocks_at_twice_the_byte_limit() -> None:
    batcher = Batcher(max_fixes=1000, max_messages=1000, max_delay_s=60, max_bytes=MB)
    add(batcher, fixes=0, size=batcher.hard_cap_bytes)
    blocked = threading.Thread(target=add, args=(batcher,))
    blocked.start()
    blocked.join(0.3)
    # Bounded wait, then the check: still waiting for the writer.
    assert blocked.is_alive()
    assert batcher.take(0) is not None
    blocked.join(10)
    assert not blocked.is_alive()
    batcher.close()


def test_a_dead_letter_keeps_a_bounded_payload_with_its_size_and_hash() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    junk = bytes(range(256)) * 4096  # 1 MiB
    letter = DeadLetter.of("fleet/c\x00r/telemetry", junk, "bad_json", "why\x00", at)
    assert letter.payload == junk[:DEAD_LETTER_PAYLOAD_LIMIT]
    assert letter.payload_size == len(junk)
    assert letter.payload_sha256 == hashlib.sha256(junk).digest()
    # Text PostgreSQL can hold, cut to a bound.
    assert "\x00" not in letter.topic
    assert "\x00" not in letter.detail
    assert len(DeadLetter.of("t", b"", "r", "x" * 10_000, at).detail) <= 500
    small = DeadLetter.of("t", b"{}", "r", "d", at)
    assert (small.payload, small.payload_size) == (b"{}", 2)
