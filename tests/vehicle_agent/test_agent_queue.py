"""The store-and-forward queues: bound, drop counting, order, ids, persistence."""

from __future__ import annotations

import sqlite3
import uuid
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
