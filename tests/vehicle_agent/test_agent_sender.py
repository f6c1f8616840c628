"""The sender's rules, with a publish function the test controls: window, order, batches.

The broker-facing behaviour is tested against real brokers elsewhere; here the test decides
when each PUBACK "arrives", which no broker lets a test do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING

import pytest

from vehicle_agent.queue import MemoryFixQueue
from vehicle_agent.sender import TelemetrySender

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from vehicle_agent.records import QueuedFix

TOPIC = "fleet/car-1/telemetry"


class Broker:
    """Holds every publish until the test acks it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.pending: list[asyncio.Event] = []
        self.max_in_flight = 0
        self.fail_next = False

    @property
    def in_flight(self) -> int:
        return sum(not gate.is_set() for gate in self.pending)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        timeout: float,  # noqa: ASYNC109 - the signature of aiomqtt's publish
    ) -> None:
        assert (topic, qos) == (TOPIC, 1)
        assert timeout > 0
        if self.fail_next:
            raise ConnectionError("link lost")
        gate = asyncio.Event()
        self.sent.append(payload)
        self.pending.append(gate)
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await gate.wait()

    def ack_all(self) -> None:
        for gate in self.pending:
            gate.set()


def seqs(payload: bytes) -> list[int]:
    body = json.loads(payload)
    return [fix["seq"] for fix in body] if isinstance(body, list) else [body["seq"]]


def put(queue: MemoryFixQueue, seq_range: range) -> None:
    for seq in seq_range:
        queue.put(seq, 1000 + seq, b'{"seq":%d}' % seq)


async def until(condition: Callable[[], object]) -> None:
    """Poll for a condition the sender's tasks will make true, for at most 5 s."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - polling state, there is no event to wait on
            await asyncio.sleep(0.001)


def run_with_sender(
    queue: MemoryFixQueue,
    broker: Broker,
    body: Callable[[TelemetrySender], Awaitable[None]],
    **knobs: float,
) -> list[int]:
    acked: list[int] = []
    settings = {"window": 4, "batch_size": 10, "rate": 1000.0, **knobs}

    def delivered(fixes: list[QueuedFix]) -> None:
        # What broker acknowledgements do: the fixes leave at their PUBACK.
        queue.remove([fix.id for fix in fixes])
        acked.append(len(fixes))

    async def main() -> None:
        sender = TelemetrySender(
            queue,
            broker.publish,
            TOPIC,
            window=int(settings["window"]),
            batch_size=int(settings["batch_size"]),
            rate=settings["rate"],
            timeout=1.0,
            on_delivered=delivered,
        )
        task = asyncio.create_task(sender.run())
        try:
            await body(sender)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())
    return acked


def test_the_backlog_goes_in_batches_oldest_first_and_leaves_only_when_acked() -> None:
    queue, broker = MemoryFixQueue(1000), Broker()
    put(queue, range(25))

    async def body(_sender: TelemetrySender) -> None:
        await until(lambda: len(broker.sent) == 3)
        assert len(queue) == 25  # nothing acked yet: everything still queued
        broker.ack_all()
        await until(lambda: len(queue) == 0)

    acked = run_with_sender(queue, broker, body)
    assert [seqs(p) for p in broker.sent] == [
        list(range(10)),
        list(range(10, 20)),
        list(range(20, 25)),
    ]
    assert all(p.startswith(b"[") for p in broker.sent)
    assert sum(acked) == 25


def test_never_more_than_the_window_unacknowledged() -> None:
    queue, broker = MemoryFixQueue(1000), Broker()
    put(queue, range(100))

    async def body(sender: TelemetrySender) -> None:
        await until(lambda: broker.in_flight == 3)
        put(queue, range(100, 110))  # live fixes, while the backlog is in flight
        sender.notify()
        await until(lambda: broker.in_flight == 4)
        await asyncio.sleep(0.05)  # give it every chance to overrun the window
        assert broker.in_flight == 4
        while len(queue):
            broker.ack_all()
            await asyncio.sleep(0.001)

    run_with_sender(queue, broker, body, window=4, batch_size=1)
    assert broker.max_in_flight == 4
    assert sorted(s for p in broker.sent for s in seqs(p)) == list(range(110))


def test_live_fixes_go_first_one_message_each() -> None:
    queue, broker = MemoryFixQueue(1000), Broker()
    put(queue, range(30))

    async def body(sender: TelemetrySender) -> None:
        await until(lambda: len(broker.sent) == 1)  # one batch; the rate holds back the next
        put(queue, range(30, 32))
        sender.notify()
        await until(lambda: len(broker.sent) == 3)
        broker.ack_all()

    # One backlog message per 100 s: the second batch cannot overtake the live fixes.
    run_with_sender(queue, broker, body, rate=0.01)
    assert [seqs(p) for p in broker.sent] == [list(range(10)), [30], [31]]
    assert broker.sent[1] == b'{"seq":30}'


def test_a_failed_publish_ends_the_connection_and_keeps_the_fixes() -> None:
    queue, broker = MemoryFixQueue(1000), Broker()
    put(queue, range(5))
    broker.fail_next = True

    async def body(_sender: TelemetrySender) -> None:
        await asyncio.sleep(0.05)

    with pytest.raises(ExceptionGroup) as raised:
        run_with_sender(queue, broker, body)
    assert raised.group_contains(ConnectionError)
    assert len(queue) == 5


def test_fixes_dropped_from_a_full_queue_are_skipped() -> None:
    queue, broker = MemoryFixQueue(10), Broker()
    put(queue, range(10))

    async def body(sender: TelemetrySender) -> None:
        await until(lambda: len(broker.sent) == 1)
        put(queue, range(10, 25))  # pushes out the whole backlog, in flight or not
        sender.notify()
        await until(lambda: len(broker.sent) == 11)
        broker.ack_all()
        await until(lambda: len(queue) == 0)

    run_with_sender(queue, broker, body, window=100, batch_size=5)
    sent = [s for p in broker.sent for s in seqs(p)]
    # The first batch was in flight; the rest of the backlog and the oldest live fixes were
    # dropped to make room, so only the newest ten went out after it.
    assert sent == [*range(5), *range(15, 25)]
    assert queue.dropped == 15
