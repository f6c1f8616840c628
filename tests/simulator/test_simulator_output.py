"""Progress lines, the summary's exit codes, the counting queue and the open-files limit."""

import io
import resource
from collections import Counter

from simulator.counting_queue import CountingQueue
from simulator.fleet import Outcome, Snapshot
from simulator.limits import needed_descriptors, raise_open_files_limit
from simulator.progress import PlainDisplay, make_display, rates, status_line
from simulator.summary import (
    EXIT_AGENT_CRASHED,
    EXIT_BROKER_UNREACHABLE,
    EXIT_OK,
    exit_code,
)
from vehicle_agent.queue import MemoryFixQueue


def test_rates_between_snapshots_and_over_the_whole_run() -> None:
    first = Snapshot(elapsed_s=10, fixes_enqueued=100, unique_acked=90)
    second = Snapshot(elapsed_s=20, fixes_enqueued=300, unique_acked=290)
    between = rates(first, second)
    assert between.fixes_enqueued == 20.0
    assert between.fixes_acked == 20.0
    assert rates(None, second).fixes_acked == 14.5
    assert rates(second, second).fixes_acked == 0.0


def test_status_line_names_every_counter() -> None:
    snap = Snapshot(
        elapsed_s=12, vehicles=50, connected=48, unique_acked=1234, backlog=7,
        queue_dropped=1, links_down=3, commands_executed=2, commands_rejected=1,
        reconnects=4, vehicles_with_errors=2,
    )  # fmt: skip
    line = status_line(snap, rates(None, snap))
    for part in ("connected 48/50", "acked 1,234", "backlog 7", "dropped 1", "links down 3",
                 "commands 2 done 1 rejected", "reconnects 4", "errors 2"):  # fmt: skip
        assert part in line


def test_plain_display_when_not_a_terminal() -> None:
    stream = io.StringIO()
    display = make_display(stream, "title")
    assert isinstance(display, PlainDisplay)
    display.show(Snapshot(elapsed_s=1, vehicles=2))
    display.show(Snapshot(elapsed_s=2, vehicles=2), final=True)
    display.close()
    assert len(stream.getvalue().splitlines()) == 2


def test_exit_codes() -> None:
    assert exit_code(Outcome(broker_reachable=False)) == EXIT_BROKER_UNREACHABLE
    assert exit_code(Outcome(broker_reachable=True)) == EXIT_OK
    crashed = Outcome(broker_reachable=True, crashed=1, errors=Counter({"boom": 1}))
    assert exit_code(crashed) == EXIT_AGENT_CRASHED


def test_counting_queue_counts_each_fix_once() -> None:
    queue = CountingQueue(MemoryFixQueue(10))
    for seq in range(3):
        queue.put(seq, 1_000 + seq, b"{}")
    ids = [fix.id for fix in queue.read(limit=10)]
    assert queue.remove(ids[:2]) == 2
    assert queue.remove(ids[:2]) == 0  # acked again (a redelivery): not counted again
    assert queue.remove(ids) == 1
    assert queue.unique_acked == 3
    assert len(queue) == 0
    assert queue.last_seq == 2
    assert queue.max_fixes == 10


def test_counting_queue_does_not_count_fixes_dropped_when_full() -> None:
    queue = CountingQueue(MemoryFixQueue(2))
    for seq in range(5):
        queue.put(seq, 1_000 + seq, b"{}")
    assert queue.dropped == 3
    queue.remove([fix.id for fix in queue.read(limit=10)])
    assert queue.unique_acked == 2


def test_open_files_limit_is_raised_to_the_hard_limit() -> None:
    limit = raise_open_files_limit(10, disk_queue=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limit.soft == soft
    assert limit.hard == hard
    assert limit.needed == needed_descriptors(10, disk_queue=True)
    assert needed_descriptors(1000, disk_queue=True) > needed_descriptors(1000, disk_queue=False)
