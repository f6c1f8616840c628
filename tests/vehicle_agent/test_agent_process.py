"""Done-when 3: the real `freecar agent` process, killed with SIGKILL, resumes from its queue.

Also what an operator sees of the command: exit codes, a clean stop on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from typing import TYPE_CHECKING

import pytest
from agent_testing import WAIT, wait_until

from devstack.ports import free_port
from protocol.status import decode_status
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from agent_testing import Subscriber

    from devstack.stack import DevStack

# Fixes queued while the agent cannot reach any broker, before it is killed.
QUEUED_BEFORE_KILL = 20


def agent_environment(**extra: str) -> dict[str, str]:
    """This process's environment without FREECAR_AGENT_* leftovers, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_AGENT_")}
    return {**env, **extra}


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `freecar agent` processes; any still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Path, **env: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"agent-{len(started)}.log").open("wb")
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "freecar.cli", "agent", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=agent_environment(**env),
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT)


def queued(path: Path) -> list[tuple[int, int]]:
    """(seq, ts) of every fix waiting in a queue file, read as another process would."""
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return db.execute("SELECT seq, ts FROM fixes ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # the agent has not created its tables yet
            return []


def write_config(tmp_path: Path, url: str, root: str, queue_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        "\n".join(
            [
                'vehicle_id = "car-1"',
                f'mqtt_url = "{url}"',
                f'topic_root = "{root}"',
                f'client_id = "{root}-car-1"',
                f'queue_path = "{queue_path}"',
                "parked_interval_s = 0.05",
                "moving_interval_s = 0.05",
                "sample_interval_s = 0.05",
                "backoff_initial_s = 0.05",
                "backoff_max_s = 0.2",
                "",
            ]
        )
    )
    return path


def test_a_killed_agent_resumes_from_its_queue(
    any_stack: DevStack,
    subscriber: Callable[..., Subscriber],
    mqtt_topic_root: str,
    start_agent: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    url = any_stack.info.mqtt_url
    telemetry = Topic.telemetry("car-1", root=mqtt_topic_root).value
    status = Topic.status("car-1", root=mqtt_topic_root).value
    queue_path = tmp_path / "state" / "agent.sqlite3"
    # First run: a broker nobody listens on, so every fix stays queued; then SIGKILL.
    unreachable = f"mqtt://nobody:nothing@127.0.0.1:{free_port()}"
    config = write_config(tmp_path, unreachable, mqtt_topic_root, queue_path)
    first = start_agent(config)
    wait_until(lambda: len(queued(queue_path)) >= QUEUED_BEFORE_KILL, "fixes queued offline")
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=WAIT) == -signal.SIGKILL
    before = queued(queue_path)
    seqs_before = [seq for seq, _ in before]
    assert seqs_before == list(range(len(before))), "all queued, in order, none acked"

    # Second run: the real broker, given by the environment, which wins over the file.
    watcher = subscriber(url, "watcher").start(telemetry, status)
    second = start_agent(config, FREECAR_AGENT_MQTT_URL=url)
    last_before = seqs_before[-1]
    wait_until(
        lambda: (
            set(seqs_before) <= watcher.seqs(telemetry)
            and max(watcher.seqs(telemetry)) > last_before + 5
        ),
        "the queued fixes and new ones",
    )
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=WAIT) == 0
    wait_until(
        lambda: any(not decode_status(m.payload).online for m in watcher.on(status)),
        "the offline status",
    )

    fixes = {fix["seq"]: fix["ts"] for fix in watcher.fixes(telemetry)}
    # seq continues where the killed process stopped, and ts keeps increasing.
    assert min(seq for seq in fixes if seq > last_before) == last_before + 1
    assert set(range(max(fixes) + 1)) <= set(fixes)
    ordered = [fixes[seq] for seq in sorted(fixes)]
    assert ordered == sorted(set(ordered))
    for seq, ts in before:
        assert fixes[seq] == ts, "the fix re-sent is the fix queued"
    last = decode_status(watcher.on(status)[-1].payload)
    assert not last.online


def test_a_bad_configuration_exits_with_1(
    start_agent: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('vehicle_id = "car 1"\nmqtt_url = "mqtt://h"\n')
    assert start_agent(config).wait(timeout=WAIT) == 1
    assert b"vehicle_id" in (tmp_path / "agent-0.log").read_bytes()
    assert start_agent(tmp_path / "missing.toml").wait(timeout=WAIT) == 1


def test_help_teaches_and_bad_arguments_exit_with_2() -> None:
    command = [sys.executable, "-m", "freecar.cli", "agent"]
    shown = subprocess.run(
        [*command, "--help"], capture_output=True, check=True, env=agent_environment()
    )
    for needle in (b"FREECAR_AGENT_", b"--config", b"Exit codes", b"trusted_keys"):
        assert needle in shown.stdout
    wrong = subprocess.run(
        [*command, "--log-level", "loud"], capture_output=True, check=False, env=agent_environment()
    )
    assert wrong.returncode == 2
