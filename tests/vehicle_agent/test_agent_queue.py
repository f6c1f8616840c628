"""The store-and-forward queues: bound, drop counting, order, ids, persistence."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vehicle_agent.queue import FixQueue, MemoryFixQueue, SqliteFixQueue

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture(params=["memory", "sqlite"])
def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[int], FixQueue]]:
    made: list[FixQueue] = []

    def make(max_fixes: int) -> FixQueue:
        if request.param == "memory":
            queue: FixQueue = MemoryFixQueue(max_fixes)
        else:
            queue = SqliteFixQueue(tmp_path / f"q{len(made)}.sqlite3", max_fixes)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()


def fill(queue: FixQueue, seqs: range) -> None:
    for seq in seqs:
        queue.put(seq, 1000 + seq, b'{"seq":%d}' % seq)


def test_a_new_queue_is_empty(make_queue: Callable[[int], FixQueue]) -> None:
    queue = make_queue(10)
    assert (len(queue), queue.last_seq, queue.last_ts, queue.dropped, queue.last_id) == (
        0,
        None,
        None,
        0,
        0,
    )
    assert queue.read(limit=10) == []


def test_fixes_come_out_oldest_first(make_queue: Callable[[int], FixQueue]) -> None:
    queue = make_queue(10)
    fill(queue, range(5))
    assert [fix.seq for fix in queue.read(limit=10)] == [0, 1, 2, 3, 4]
    assert [fix.seq for fix in queue.read(limit=2)] == [0, 1]
    first = queue.read(limit=1)[0]
    assert first.payload == b'{"seq":0}'
    assert [fix.seq for fix in queue.read(after=first.id, limit=2)] == [1, 2]
    assert (queue.last_seq, queue.last_ts) == (4, 1004)


def test_a_full_queue_drops_the_oldest_and_counts_them(
    make_queue: Callable[[int], FixQueue],
) -> None:
    queue = make_queue(3)
    fill(queue, range(3))
    assert queue.put(3, 1003, b"{}") == 1
    assert queue.put(4, 1004, b"{}") == 1
    assert len(queue) == 3
    assert queue.dropped == 2
    assert [fix.seq for fix in queue.read(limit=10)] == [2, 3, 4]


def test_removing_acked_fixes_in_any_order(make_queue: Callable[[int], FixQueue]) -> None:
    queue = make_queue(100)
    fill(queue, range(6))
    ids = [fix.id for fix in queue.read(limit=10)]
    assert queue.remove([ids[3], ids[1]]) == 2
    assert queue.remove([ids[1], 10_000]) == 0  # already gone, never existed
    assert [fix.seq for fix in queue.read(limit=10)] == [0, 2, 4, 5]
    assert len(queue) == 4


def test_ids_are_never_reused_once_the_queue_empties(make_queue: Callable[[int], FixQueue]) -> None:
    queue = make_queue(10)
    fill(queue, range(3))
    last = queue.last_id
    queue.remove([fix.id for fix in queue.read(limit=10)])
    queue.put(3, 1003, b"{}")
    assert queue.last_id == last + 1
    assert queue.read(after=last, limit=10)[0].seq == 3


def test_the_command_log_remembers_until_expiry(make_queue: Callable[[int], FixQueue]) -> None:
    log = make_queue(10).commands
    early, late = uuid.uuid4(), uuid.uuid4()
    log.begin(early, 100.0)
    log.begin(late, 200.0)
    record = log.get(early)
    assert record is not None
    assert record.ack is None
    log.finish(early, b"ack-early")
    log.finish(late, b"ack-late")
    assert [r.cmd_id for r in log.unsent()] == [early, late]
    log.mark_sent(early)
    assert [r.ack for r in log.unsent()] == [b"ack-late"]
    assert log.prune(150.0) == 1
    assert log.get(early) is None
    assert log.get(late) is not None


@settings(max_examples=60, deadline=None)
@given(
    max_fixes=st.integers(1, 8),
    operations=st.lists(st.one_of(st.just("put"), st.integers(0, 12)), max_size=40),
)
def test_both_queues_behave_like_a_bounded_fifo(max_fixes: int, operations: list[object]) -> None:
    """A put appends (dropping the oldest when full); an integer acks the fix at that position."""
    memory = MemoryFixQueue(max_fixes)
    disk = SqliteFixQueue(_memory_path(), max_fixes)
    model: list[int] = []
    dropped = 0
    seq = 0
    try:
        for operation in operations:
            if operation == "put":
                if len(model) == max_fixes:
                    model.pop(0)
                    dropped += 1
                model.append(seq)
                for queue in (memory, disk):
                    queue.put(seq, seq, b"{}")
                seq += 1
            elif model and isinstance(operation, int):
                gone = model.pop(operation % len(model))
                for queue in (memory, disk):
                    ids = [fix.id for fix in queue.read(limit=100) if fix.seq == gone]
                    assert queue.remove(ids) == 1
            for queue in (memory, disk):
                assert [fix.seq for fix in queue.read(limit=100)] == model
                assert len(queue) == len(model)
                assert queue.dropped == dropped
    finally:
        disk.close()


def _memory_path() -> Path:
    # SQLite's private in-memory database: the same code path as a file, without the disk.
    return Path(":memory:")


def test_the_sqlite_queue_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite3"
    queue = SqliteFixQueue(path, 3)
    fill(queue, range(5))
    cmd_id = uuid.uuid4()
    queue.commands.begin(cmd_id, 10.0)
    queue.commands.finish(cmd_id, b"ack")
    last_id = queue.last_id
    queue.remove([queue.read(limit=1)[0].id])
    queue.close()

    again = SqliteFixQueue(path, 3)
    assert [fix.seq for fix in again.read(limit=10)] == [3, 4]
    assert (again.last_seq, again.last_ts, again.dropped, again.last_id) == (4, 1004, 2, last_id)
    assert again.commands.get(cmd_id) is not None
    again.close()


def test_the_sqlite_queue_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite3"
    SqliteFixQueue(path, 3).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_smaller_bound_after_a_restart_drops_the_excess(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite3"
    queue = SqliteFixQueue(path, 10)
    fill(queue, range(6))
    queue.close()
    smaller = SqliteFixQueue(path, 3)
    assert smaller.put(6, 1006, b"{}") == 4
    assert [fix.seq for fix in smaller.read(limit=10)] == [4, 5, 6]
    assert smaller.dropped == 4
    smaller.close()


def test_the_queue_refuses_a_zero_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryFixQueue(0)
    with pytest.raises(ValueError, match="at least 1"):
        SqliteFixQueue(tmp_path / "q.sqlite3", 0)


# --- storage acknowledgement (contract 1.1) ----------------------------------------------


def test_the_hub_confirming_a_seq_removes_every_fix_below_it(
    make_queue: Callable[[int], FixQueue],
) -> None:
    queue = make_queue(100)
    fill(queue, range(10))
    assert queue.confirmed_next is None
    assert queue.confirm(4) == 4
    assert [fix.seq for fix in queue.read(limit=100)] == [4, 5, 6, 7, 8, 9]
    # An older confirmation (another hub's, published late) changes nothing.
    assert queue.confirm(2) == 0
    assert queue.confirmed_next == 4
    assert queue.confirm(100) == 6
    assert len(queue) == 0
    assert queue.confirmed_next == 100


def test_delivered_fixes_are_counted_once_and_removed_together(
    make_queue: Callable[[int], FixQueue],
) -> None:
    queue = make_queue(100)
    fill(queue, range(6))
    ids = [fix.id for fix in queue.read(limit=100)]
    assert queue.mark_delivered(ids[:3]) == 3
    assert queue.mark_delivered(ids[1:4]) == 1  # sent again after a reconnect
    assert queue.mark_delivered([10_000]) == 0  # gone meanwhile
    assert queue.delivered == 4
    assert queue.confirm(2) == 2
    assert queue.delivered == 2
    assert queue.remove_delivered() == 2
    assert [fix.seq for fix in queue.read(limit=100)] == [4, 5]
    assert queue.delivered == 0


def test_the_floor_is_the_lowest_seq_left_after_the_next_put(
    make_queue: Callable[[int], FixQueue],
) -> None:
    queue = make_queue(3)
    assert queue.floor_after_put() is None  # only the new fix will be there
    fill(queue, range(2))
    assert queue.floor_after_put() == 0
    fill(queue, range(2, 3))
    assert queue.floor_after_put() == 1  # full: seq 0 makes room
    queue.confirm(3)
    assert queue.floor_after_put() is None


def test_queue_ids_are_random_and_a_file_keeps_its_own(tmp_path: Path) -> None:
    assert MemoryFixQueue(1).queue_id != MemoryFixQueue(1).queue_id  # 1 in 2^31 to clash
    path = tmp_path / "agent.sqlite3"
    queue = SqliteFixQueue(path, 10)
    fill(queue, range(3))
    queue.confirm(2)
    queue_id = queue.queue_id
    assert 1 <= queue_id < 2**31
    queue.close()
    again = SqliteFixQueue(path, 10)
    assert (again.queue_id, again.confirmed_next) == (queue_id, 2)
    again.close()
    assert SqliteFixQueue(tmp_path / "lost-and-new.sqlite3", 10).queue_id != queue_id


def test_a_queue_file_from_before_queue_ids_gets_one_and_keeps_its_counter(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.sqlite3"
    with sqlite3.connect(path) as db:  # the counters a contract 1.0 agent left behind
        db.executescript(
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "INSERT INTO counters VALUES ('last_seq', 41), ('last_ts', 1041), ('dropped', 3);"
        )
    queue = SqliteFixQueue(path, 10)
    queue_id = queue.queue_id
    assert (queue.last_seq, queue.dropped, queue.confirmed_next) == (41, 3, None)
    queue.close()
    assert SqliteFixQueue(path, 10).queue_id == queue_id


@dataclass
class AckModel:
    """What a queue should hold under puts, broker acks, hub confirmations and fallbacks."""

    max_fixes: int
    queues: tuple[FixQueue, ...]
    held: list[int] = field(default_factory=list)  # seqs, oldest first
    delivered: set[int] = field(default_factory=set)
    confirmed: int | None = None
    seq: int = 0

    def put(self, _number: int) -> None:
        kept = self.held[max(0, len(self.held) + 1 - self.max_fixes) :]
        for queue in self.queues:
            assert queue.floor_after_put() == (kept[0] if kept else None)
            queue.put(self.seq, self.seq, b"{}")
        if len(self.held) == self.max_fixes:
            self.delivered.discard(self.held.pop(0))
        self.held.append(self.seq)
        self.seq += 1

    def deliver(self, number: int) -> None:
        if not self.held:
            return
        chosen = self.held[number % len(self.held) :][:3]
        new = len(set(chosen) - self.delivered)
        self.delivered |= set(chosen)
        for queue in self.queues:
            ids = [fix.id for fix in queue.read(limit=100) if fix.seq in chosen]
            assert queue.mark_delivered(ids) == new

    def confirm(self, number: int) -> None:
        below = [s for s in self.held if s < number]
        self.held = [s for s in self.held if s >= number]
        self.delivered -= set(below)
        self.confirmed = number if self.confirmed is None else max(self.confirmed, number)
        for queue in self.queues:
            assert queue.confirm(number) == len(below)

    def fall_back(self, _number: int) -> None:
        self.held = [s for s in self.held if s not in self.delivered]
        for queue in self.queues:
            assert queue.remove_delivered() == len(self.delivered)
        self.delivered.clear()

    def check(self) -> None:
        for queue in self.queues:
            assert [fix.seq for fix in queue.read(limit=100)] == self.held
            assert queue.delivered == len(self.delivered)
            assert queue.confirmed_next == self.confirmed


@settings(max_examples=80, deadline=None)
@given(
    max_fixes=st.integers(1, 8),
    operations=st.lists(
        st.tuples(st.sampled_from(["put", "deliver", "confirm", "fall_back"]), st.integers(0, 12)),
        max_size=40,
    ),
)
def test_both_queues_agree_with_a_model_of_hub_acknowledgements(
    max_fixes: int, operations: list[tuple[str, int]]
) -> None:
    """Puts, broker acks (`deliver`), hub confirmations and fallbacks, against a plain model."""
    disk = SqliteFixQueue(_memory_path(), max_fixes)
    model = AckModel(max_fixes, (MemoryFixQueue(max_fixes), disk))
    try:
        for operation, number in operations:
            getattr(model, operation)(number)
            model.check()
    finally:
        disk.close()
