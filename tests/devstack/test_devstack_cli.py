"""`freecar devstack`: prints where the stack is, stays up, tears down on a signal."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING

import psycopg
import pytest
import redis

from devstack.modes import MODE_ENV_VAR
from devstack.mqtt_probe import CONNACK_ACCEPTED, connack_code
from protocol.broker_url import BrokerUrl

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START_WAIT = 60.0
STOP_WAIT = 30.0


class Lines:
    """The lines a process prints, read on a thread so every wait can be bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")  # end of output

    def next(self) -> str:
        """The next line ("" at the end), waiting at most START_WAIT seconds."""
        try:
            return self._lines.get(timeout=START_WAIT)
        except queue.Empty:
            pytest.fail("freecar devstack printed nothing in time")

    def finish(self) -> None:
        """Wait for the end of the output (the process has exited)."""
        self._thread.join(STOP_WAIT)


@contextlib.contextmanager
def freecar_devstack(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """Run `freecar devstack ARGS`; whatever happens, it is gone afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "freecar", "devstack", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert process.stdout is not None
    lines = Lines(process.stdout)
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        lines.finish()
        process.stdout.close()


def _stop(process: subprocess.Popen[str], signum: signal.Signals) -> int:
    process.send_signal(signum)
    return process.wait(STOP_WAIT)


def test_env_lines_come_first_and_sigterm_stops_cleanly() -> None:
    with freecar_devstack("--env") as (process, lines):
        exports: dict[str, str] = {}
        while not (line := lines.next()).startswith("# ready"):
            assert line, "freecar devstack exited early"
            name, value = line.removeprefix("export ").rstrip("\n").split("=", 1)
            exports[name] = shlex.split(value)[0]
        assert exports["FREECAR_ENV"] == "development"
        with psycopg.connect(exports["FREECAR_DATABASE_URL"]) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        with redis.Redis.from_url(exports["FREECAR_REDIS_URL"]) as client:
            assert client.ping()
        broker = BrokerUrl.parse(exports["FREECAR_MQTT_URL"])
        assert connack_code(broker.port, broker.username, broker.password) == CONNACK_ACCEPTED
        assert _stop(process, signal.SIGTERM) == 0
    assert connack_code(broker.port, broker.username, broker.password) is None


def test_json_describes_the_stack_and_sigint_removes_it() -> None:
    with freecar_devstack("--json", "--mode", "embedded") as (process, lines):
        info = json.loads(lines.next())
        assert info["mode"] == "embedded"
        assert info["mqtt_broker"] == "amqtt"
        assert info["env"]["FREECAR_MQTT_SHARED_SUBSCRIPTIONS"] == "false"
        assert info["pid"] == process.pid
        assert Path(info["stack_dir"]).is_dir()
        assert _stop(process, signal.SIGINT) == 0
    assert not Path(info["stack_dir"]).exists()


def test_banner_names_binaries_and_versions() -> None:
    with freecar_devstack() as (process, lines):
        text = "".join(lines.next() for _ in range(10))
        assert _stop(process, signal.SIGINT) == 0
    assert "FreeCar devstack is up" in text
    for service in ("PostgreSQL ", "Redis ", "MQTT "):
        assert service in text


def test_a_bad_mode_exits_2_with_the_choices() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "freecar", "devstack"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), MODE_ENV_VAR: "docker"},
        timeout=START_WAIT,
        check=False,
    )
    assert done.returncode == 2
    assert "auto, system, embedded" in done.stderr


def test_help_teaches_the_modes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "freecar", "devstack", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=START_WAIT,
        check=True,
    )
    for word in ("auto", "system", "embedded", "--env", "--json", "FREECAR_DEVSTACK"):
        assert word in done.stdout


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def test_env_file_is_private_complete_and_gone_at_exit(tmp_path: Path) -> None:
    env_file = tmp_path / ".freecar" / "devstack.env"
    with freecar_devstack("--json", "--env-file", str(env_file)) as (process, lines):
        info = json.loads(lines.next())
        assert env_file.stat().st_mode & 0o777 == 0o600
        assert env_file.parent.stat().st_mode & 0o777 == 0o700
        exported = dict(
            line.removeprefix("export ").split("=", 1)
            for line in env_file.read_text().splitlines()
            if line.startswith("export ")
        )
        assert {k: shlex.split(v)[0] for k, v in exported.items()} == info["env"]
        # The broker's passwords are in the file and nowhere on a command line (`ps`).
        passwords = {
            BrokerUrl.parse(info["env"][name]).password
            for name in ("FREECAR_MQTT_URL", "FREECAR_MQTT_ADMIN_URL")
        }
        children = _descendants(process.pid)
        assert len(children) >= 3  # PostgreSQL, Redis, the broker (and the watchdog)
        for pid in children:
            for password in passwords:
                assert password
                assert password not in _command_line(pid), _command_line(pid)
        assert _stop(process, signal.SIGTERM) == 0
    assert not env_file.exists()


def test_an_env_file_that_cannot_be_written_fails_before_anything_starts(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "freecar", "devstack", "--env-file", str(blocker / "x.env")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=START_WAIT,
        check=False,
    )
    assert done.returncode == 1
    assert "--env-file" in done.stderr
    assert "Traceback" not in done.stderr
