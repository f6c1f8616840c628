"""Stopping a worker with work in hand: nothing lost, nothing sent twice.

Before, Ctrl-C on the demo (SIGTERM to every process of the worker) killed the pool's
children mid-task (`WorkerLostError`), and a warm shutdown waited on tasks for as long as
they took, until the supervisor's SIGKILL stranded their messages in Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.vehicles import insert_vehicles
from support.waiting import WAIT_S, poll, wait_until
from worker_testing import (
    OPS_EMAILS,
    insert_event,
    notified,
    worker_settings,
)

from devstack.stack import start_stack
from freecar.supervisor import STOP_GRACE_S
from jobs.names import NOTIFY_EVENT_TASK
from jobs.producer import create_producer

if TYPE_CHECKING:
    from worker_testing import SmtpSink

# Short, so the test does not wait long for a task that will not finish in time.
GRACE_S = "1"
# One pool process and no scheduler: all a test of one task needs.
NO_BEAT = ("--concurrency", "1", "--no-beat")
# As the demo runs it: the default pool and the embedded scheduler.
AS_THE_DEMO = ()


class Worker:
    """`freecar worker` as a child process, its output kept in a file."""

    def __init__(
        self, env: dict[str, str], log_path: Path, *, options: tuple[str, ...] = NO_BEAT
    ) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "freecar", "worker", *options],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        """Stop it as a supervisor does: SIGTERM, then SIGKILL if it is not gone in time.

        The exit code, or None if it had to be killed.
        """
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=WAIT_S)


def _env(url: str, redis_url: str, smtp: SmtpSink) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    env.update(
        FREECAR_ENV="test",
        FREECAR_DATABASE_URL=url,
        FREECAR_REDIS_URL=redis_url,
        FREECAR_NOTIFY_SMTP_HOST="127.0.0.1",
        FREECAR_NOTIFY_SMTP_PORT=str(smtp.port),
        FREECAR_NOTIFY_OPS_EMAILS=",".join(OPS_EMAILS),
        FREECAR_WORKER_SHUTDOWN_GRACE_S=GRACE_S,
    )
    return env


def _send(url: str, redis_url: str, event_id: int) -> None:
    producer = create_producer(worker_settings(url, redis_url))
    try:
        producer.send_task(NOTIFY_EVENT_TASK, args=[event_id])
    finally:
        producer.close()


def _emails_of(smtp: SmtpSink, event_id: int) -> dict[str, int]:
    return {
        address: sum(1 for m in smtp.to(address) if m["X-FreeCar-Event-Id"] == str(event_id))
        for address in OPS_EMAILS
    }


def test_a_notification_in_flight_at_shutdown_is_delivered_once_after_restart(
    migrated_database_url: str, redis_url: str, smtp: SmtpSink, tmp_path: Path
) -> None:
    url = migrated_database_url
    insert_vehicles(url, ["stop-car"])
    event_id = insert_event(url, "stop-car", "low_battery", details={"battery_pct": 7.0})
    env = _env(url, redis_url, smtp)
    smtp.gate.clear()  # the relay stalls: the first delivery hangs, nothing is sent yet
    first = Worker(env, tmp_path / "first.log")
    try:
        _send(url, redis_url, event_id)
        assert smtp.held.wait(WAIT_S), first.log()
        # Stopped as the demo's supervisor, systemd or Docker stops it, task in flight.
        code = first.stop()
    finally:
        first.kill()
    log = first.log()
    assert code == 0, log
    assert "WorkerLostError" not in log
    assert _emails_of(smtp, event_id) == dict.fromkeys(OPS_EMAILS, 0)
    assert not notified(url, event_id)

    smtp.gate.set()
    second = Worker(env, tmp_path / "second.log")
    try:
        wait_until(lambda: notified(url, event_id), what="the event notified after restart")
        # A later task runs after any redelivery of the first: none may send it again.
        later = insert_event(url, "stop-car", "low_battery", details={"battery_pct": 6.0})
        _send(url, redis_url, later)
        wait_until(lambda: notified(url, later), what="the later event notified")
        assert second.stop() == 0, second.log()
    finally:
        second.kill()
    assert _emails_of(smtp, event_id) == dict.fromkeys(OPS_EMAILS, 1)
    assert "WorkerLostError" not in second.log()


def test_a_task_that_finishes_within_the_grace_is_not_run_again(
    migrated_database_url: str, redis_url: str, smtp: SmtpSink, tmp_path: Path
) -> None:
    url = migrated_database_url
    insert_vehicles(url, ["stop-car-2"])
    event_id = insert_event(url, "stop-car-2", "low_battery", details={"battery_pct": 7.0})
    env = _env(url, redis_url, smtp) | {"FREECAR_WORKER_SHUTDOWN_GRACE_S": "30"}
    smtp.gate.clear()
    first = Worker(env, tmp_path / "first.log")
    try:
        _send(url, redis_url, event_id)
        assert smtp.held.wait(WAIT_S), first.log()
        # Stopped while the relay stalls; the relay recovers within the grace.
        first.process.send_signal(signal.SIGTERM)
        smtp.gate.set()
        assert first.process.wait(timeout=WAIT_S * 2) == 0, first.log()
    finally:
        first.kill()
    assert "WorkerLostError" not in first.log()
    assert notified(url, event_id)
    assert _emails_of(smtp, event_id) == dict.fromkeys(OPS_EMAILS, 1)

    second = Worker(env, tmp_path / "second.log")
    try:
        later = insert_event(url, "stop-car-2", "low_battery", details={"battery_pct": 6.0})
        _send(url, redis_url, later)
        wait_until(lambda: notified(url, later), what="the later event notified")
        assert second.stop() == 0, second.log()
    finally:
        second.kill()
    assert _emails_of(smtp, event_id) == dict.fromkeys(OPS_EMAILS, 1)


def test_sigterm_to_the_whole_process_group_kills_no_task(
    migrated_database_url: str, redis_url: str, smtp: SmtpSink, tmp_path: Path
) -> None:
    url = migrated_database_url
    insert_vehicles(url, ["stop-car-3"])
    event_id = insert_event(url, "stop-car-3", "low_battery", details={"battery_pct": 7.0})
    env = _env(url, redis_url, smtp) | {"FREECAR_WORKER_SHUTDOWN_GRACE_S": "30"}
    smtp.gate.clear()
    worker = Worker(env, tmp_path / "worker.log")
    try:
        _send(url, redis_url, event_id)
        assert smtp.held.wait(WAIT_S), worker.log()
        # What a terminal's Ctrl-C or `kill -- -PGID` does: every process of the worker,
        # the pool's children included, gets the signal.
        os.killpg(worker.process.pid, signal.SIGTERM)
        smtp.gate.set()
        assert worker.process.wait(timeout=WAIT_S * 2) == 0, worker.log()
    finally:
        worker.kill()
    assert "WorkerLostError" not in worker.log()
    assert _emails_of(smtp, event_id) == dict.fromkeys(OPS_EMAILS, 1)


def _session_members(session_id: int) -> list[int]:
    """The processes still alive in a session (the worker and its pool, started as its leader)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the command's ")": state, ppid, pgrp, session...
        if int(fields[3]) == session_id and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("options", [NO_BEAT, AS_THE_DEMO], ids=["no_beat", "as_the_demo"])
@pytest.mark.parametrize("reconnecting", [False, True], ids=["at_once", "reconnecting"])
def test_a_worker_whose_redis_is_gone_still_stops_and_leaves_no_process(
    migrated_database_url: str,
    smtp: SmtpSink,
    tmp_path: Path,
    options: tuple[str, ...],
    *,
    reconnecting: bool,
) -> None:
    # Its own stack, so its Redis can be taken away: as when the demo stops its services
    # under a worker that is slow to stop, or Redis dies in production.
    with start_stack() as stack:
        env = _env(migrated_database_url, stack.redis.url(), smtp)
        worker = Worker(env, tmp_path / "w.log", options=options)
        try:
            wait_until(lambda: " ready." in worker.log(), what="the worker ready")
            stack.redis.kill()
            if reconnecting:
                wait_until(lambda: "Trying again in" in worker.log(), what="a reconnection")
            # At once: as when the demo is killed, its services and its worker stop together.
            code = worker.stop()
            left = poll(lambda: not _session_members(worker.process.pid), timeout=WAIT_S)
        finally:
            worker.kill()
    assert code is not None, f"had to be killed:\n{worker.log()}"
    assert left, f"its processes outlived it: {_session_members(worker.process.pid)}"
