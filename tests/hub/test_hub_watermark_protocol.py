"""Contract 1.1 end to end, pure: the agent's queue and rules against the hub's watermark.

A car (the agent's real queue and `StorageAcks`), a broker that acknowledges everything and
may crash and lose what it holds, and a hub (`hub.watermarks`) that handles messages in
any order, and whose watermark table may go back to an older state, play through random
histories. Whatever happens, a fix leaves the car only once the hub handled it (or the
car's own full queue dropped it); and once the losses stop, the car's re-sends get every
fix through.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.watermarks import (
    VehicleHandled,
    WatermarkPolicy,
    WatermarkState,
    advance,
    is_due,
    stored_message,
)
from hub.watermarks import published as mark_published
from protocol.stored import FixRef
from vehicle_agent.queue import MemoryFixQueue
from vehicle_agent.storage_acks import StorageAcks

if TYPE_CHECKING:
    import random

T0 = datetime(2025, 6, 15, tzinfo=UTC)
POLICY = WatermarkPolicy(max_ranges=4)
RESEND_AFTER_S = 30.0


@dataclass
class Car:
    """The agent's parts that decide what stays queued, driven step by step."""

    max_fixes: int
    queue: MemoryFixQueue = field(init=False)
    rules: StorageAcks = field(init=False)
    cursor: int = 0  # the last queue id sent on this connection
    clock: int = 0  # the unit's clock, in ms
    taken: set[tuple[int, int]] = field(default_factory=set)  # (queue id, seq)
    dropped: set[tuple[int, int]] = field(default_factory=set)
    removed: set[tuple[int, int]] = field(default_factory=set)  # confirmed by the hub

    def __post_init__(self) -> None:
        self.new_queue()

    def new_queue(self) -> None:
        """A new unit, or a lost queue file: a new queue id and a counter from 0."""
        self.queue = MemoryFixQueue(self.max_fixes)
        self.rules = StorageAcks(
            policy="hub",
            queue_id=self.queue.queue_id,
            timeout_s=60.0,
            silence_s=600.0,
            window=8,
            resend_after_s=RESEND_AFTER_S,
        )
        self.cursor = 0

    def take_fix(self) -> None:
        queue = self.queue
        seq = 0 if queue.last_seq is None else queue.last_seq + 1
        floor = queue.floor_after_put()
        announced = self.rules.floor_to_announce(
            seq if floor is None else floor, queue.confirmed_next
        )
        self.clock += 1  # the unit's clock goes on across queues
        ref = FixRef(queue.queue_id, seq, self.clock, announced)
        before = {fix.seq for fix in queue.read(limit=10_000)}
        queue.put(seq, seq, repr(ref).encode())
        after = {fix.seq for fix in queue.read(limit=10_000)}
        self.dropped |= {(queue.queue_id, gone) for gone in before - after}
        self.taken.add((queue.queue_id, seq))

    def send(self, size: int, now: float) -> list[FixRef] | None:
        """The next message of this connection, acknowledged by the broker at once."""
        if not self.rules.window_open(0):
            return None
        fixes = self.queue.read(after=self.cursor, limit=size)
        if not fixes:
            return None
        self.cursor = fixes[-1].id
        self.queue.mark_delivered([fix.id for fix in fixes])
        self.rules.delivered(fixes[0].seq, fixes[-1].seq, now)
        return [eval(fix.payload) for fix in fixes]  # noqa: S307 - our own repr of a FixRef

    def reconnect(self, now: float) -> None:
        self.rules.connected(now)
        self.cursor = 0  # everything still queued goes again

    def hear(self, state: WatermarkState, now: float) -> None:
        message = stored_message(state, T0 + timedelta(seconds=now))
        queue = self.queue
        verdict = self.rules.stored(
            message, last_seq=queue.last_seq, confirmed_next=queue.confirmed_next, now=now
        )
        if verdict.confirm is not None:
            before = {fix.seq for fix in queue.read(limit=10_000)}
            queue.confirm(verdict.confirm)
            after = {fix.seq for fix in queue.read(limit=10_000)}
            self.removed |= {(queue.queue_id, gone) for gone in before - after}
        if verdict.resend:
            self.cursor = 0


@dataclass
class Hub:
    """One vehicle's watermark, and every fix the hub ever handled."""

    state: WatermarkState | None = None
    handled: set[tuple[int, int]] = field(default_factory=set)

    saved: list[WatermarkState] = field(default_factory=list)

    def handle(self, messages: list[list[FixRef]], now: float) -> WatermarkState | None:
        """A batch; returns the state to publish after its commit, if any."""
        refs = [ref for message in messages for ref in message]
        self.handled |= {(ref.queue_id, ref.seq) for ref in refs}
        result = advance(self.state, VehicleHandled(refs, len(messages), 0), at(now), POLICY)
        if result is None:
            return None
        self.state = result.state
        self.saved.append(replace(result.state))
        return result.state if result.publish else None

    def go_back(self, shuffle: random.Random) -> None:
        """The watermark table restored from a backup: an older state (the fixes stay)."""
        if self.saved:
            self.state = replace(shuffle.choice(self.saved))

    def sweep(self, now: float) -> WatermarkState | None:
        if self.state is not None and is_due(self.state, at(now)):
            return mark_published(self.state, at(now))
        return None


def at(now: float) -> datetime:
    return T0 + timedelta(seconds=now)


@dataclass
class World:
    """The car, the broker and the hub, moved on one event at a time."""

    car: Car
    shuffle: random.Random
    hub: Hub = field(default_factory=Hub)
    broker: list[list[FixRef]] = field(default_factory=list)  # at the broker, not at the hub
    now: float = 0.0

    def tell(self, state: WatermarkState | None) -> None:
        if state is not None:
            self.car.hear(state, self.now)

    def fix(self) -> None:
        self.car.take_fix()

    def send(self) -> None:
        message = self.car.send(self.shuffle.randint(1, 3), self.now)
        if message is not None:
            self.broker.append(message)

    def handle(self) -> None:
        if self.broker:
            self.shuffle.shuffle(self.broker)  # several hubs; live first and backlog after
            count = self.shuffle.randint(1, len(self.broker))
            batch, self.broker[:] = self.broker[:count], self.broker[count:]
            self.tell(self.hub.handle(batch, self.now))

    def sweep(self) -> None:
        self.tell(self.hub.sweep(self.now))

    def wait(self) -> None:
        self.now += 60.0

    def crash(self) -> None:
        self.broker.clear()  # acknowledged to the car, never saved: gone
        self.car.reconnect(self.now)

    def new_queue(self) -> None:
        self.car.new_queue()

    def restore(self) -> None:
        self.hub.go_back(self.shuffle)

    def settle(self) -> None:
        """No more losses: reconnect, send everything, handle everything, tell the car.

        The car keeps reporting meanwhile, a fix per round, as a real one does.
        """
        self.now += RESEND_AFTER_S + 1
        self.car.take_fix()
        self.car.reconnect(self.now)
        while (message := self.car.send(10, self.now)) is not None or self.broker:
            if message is not None:
                self.broker.append(message)
            self.tell(self.hub.handle(self.broker[:], self.now))
            self.broker.clear()
        self.now += POLICY.max_delay.total_seconds()
        self.sweep()


events = st.lists(
    st.sampled_from(
        ["fix"] * 3
        + ["send"] * 3
        + ["handle"] * 2
        + ["sweep", "wait", "crash", "new_queue", "restore"]
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(events=events, shuffle=st.randoms(use_true_random=False), max_fixes=st.integers(3, 30))
def test_a_fix_leaves_the_car_only_once_the_hub_handled_it(
    events: list[str], shuffle: random.Random, max_fixes: int
) -> None:
    world = World(Car(max_fixes), shuffle)
    car, hub = world.car, world.hub
    for event in events:
        world.now += 1.0
        getattr(world, event)()
        # The promise: nothing left the car that the hub did not handle.
        assert car.removed <= hub.handled
    for _ in range(60):
        world.settle()
        if len(car.queue) == 0:
            break
    assert len(car.queue) == 0, "the car still holds fixes the hub never confirmed"
    mine = {(queue_id, seq) for queue_id, seq in car.taken if queue_id == car.queue.queue_id}
    assert mine <= hub.handled | car.dropped
    assert car.removed <= hub.handled
