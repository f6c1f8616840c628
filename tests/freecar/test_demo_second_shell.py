"""The README's second-shell examples, run as written against a running `freecar demo`.

Before, none of them worked from a second shell: `freecar` was not on PATH, nothing was
exported, the broker's password was masked with no way to get it, and the database default
pointed at whatever PostgreSQL ran on localhost:5432. The demo now writes its environment
to `.freecar/demo.env` (0600) and prints the line that loads it.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psycopg
import pytest
from support.waiting import poll, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
# Bounded waits, generous for a loaded two-core machine.
START_S = 240.0
COMMAND_S = 120.0
WAIT_S = 90.0
# What a new user's second shell has: the system's PATH, nothing of ours.
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
ADMIN_PASSWORD = "a passphrase typed twice"


def readme_commands() -> list[str]:
    """The commands of the README's "From a second shell" block, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### From a second shell", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [command for command in commands if command]


class Demo:
    """`freecar demo` started as `make demo` starts it, its output collected as it comes."""

    def __init__(self, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
        if "FREECAR_DEVSTACK" in os.environ:  # the suite's mode: embedded on a bare machine
            env["FREECAR_DEVSTACK"] = os.environ["FREECAR_DEVSTACK"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "freecar", "demo"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def stop(self) -> int:
        """Ctrl-C, as a person stops it."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=START_S)
        self._reader.join(timeout=WAIT_S)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_S)


def user_shell(command: str) -> list[str]:
    """`sh -c` that loads the demo's file as the README says, then runs `command`."""
    return ["sh", "-c", f". ./.freecar/demo.env && exec {command}"]


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FREECAR_", "VIRTUAL_ENV"))}
    env["PATH"] = USER_PATH
    return env


def in_terminal(argv: list[str], cwd: Path, answers: dict[str, str]) -> tuple[int, str]:
    """Run `argv` on a pseudo-terminal, typing each answer when its prompt appears."""
    leader, follower = os.openpty()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=user_env(),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    seen = ""
    pending = dict(answers)
    deadline = time.monotonic() + COMMAND_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 4096).decode(errors="replace")
            except OSError:  # EIO: the terminal's last user is gone
                break
            if not chunk:
                break
            seen += chunk
            for prompt in list(pending):
                if seen.rstrip().endswith(prompt):
                    os.write(leader, pending.pop(prompt).encode())
        return process.wait(timeout=COMMAND_S), seen
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()


def read_env_file(path: Path) -> dict[str, str]:
    """The FREECAR_* values the file exports, as a shell would read them."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("export FREECAR_"):
            name, value = line.removeprefix("export ").split("=", 1)
            values[name] = shlex.split(value)[0]
    return values


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def proc_text(pid: int, name: str) -> str:
    try:
        return (Path("/proc") / str(pid) / name).read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cars_reported(url: str, prefix: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT vehicle_id) FROM telemetry WHERE vehicle_id LIKE %s",
            (f"{prefix}%",),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path)
    try:
        wait_until(
            lambda: "Press Ctrl-C" in running.output() or running.process.poll() is not None,
            what="the demo's banner",
            timeout=START_S,
        )
        assert running.process.poll() is None, running.output()
        yield running
    finally:
        processes = descendants(running.process.pid)
        running.kill()
    # However a test ended, the demo's processes go with it (see the test below).
    assert poll(lambda: not any(alive(pid) for pid in processes), timeout=WAIT_S), {
        pid: proc_text(pid, "cmdline") for pid in processes if alive(pid)
    }


@pytest.mark.integration
def test_the_readme_second_shell_examples_work_against_a_running_demo(
    demo: Demo, tmp_path: Path
) -> None:
    commands = readme_commands()
    assert commands[0] == ". .freecar/demo.env"
    env_file = tmp_path / ".freecar" / "demo.env"
    # The banner's line loads that very file.
    assert f". {env_file}" in demo.output()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700
    assert ".freecar/" in (ROOT / ".gitignore").read_text().splitlines()
    values = read_env_file(env_file)
    database_url = values["FREECAR_DATABASE_URL"]

    by_name = {command.split()[1]: command for command in commands[1:]}
    assert set(by_name) == {"command", "create-admin", "sim"}

    unlock = subprocess.run(
        user_shell(by_name["command"]),
        cwd=tmp_path,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_S,
        check=False,
    )
    assert unlock.returncode == 0, unlock.stdout + unlock.stderr
    assert "confirmed" in unlock.stdout

    code, typed = in_terminal(
        user_shell(by_name["create-admin"]),
        tmp_path,
        {"password:": ADMIN_PASSWORD + "\n", "again:": ADMIN_PASSWORD + "\n"},
    )
    assert code == 0, typed
    assert "created admin admin@example.com" in typed
    assert ADMIN_PASSWORD not in typed  # asked without echo

    sim = subprocess.Popen(
        user_shell(by_name["sim"]),
        cwd=tmp_path,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(
            lambda: cars_reported(database_url, "sim-") >= 200,
            what="200 more cars reporting",
            timeout=WAIT_S,
        )
        sim.send_signal(signal.SIGINT)  # the README's "until Ctrl-C"
        sim_output, _ = sim.communicate(timeout=COMMAND_S)
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.communicate(timeout=WAIT_S)
    assert sim.returncode == 0, sim_output
    assert "freecar sim: 200 cars" in sim_output


@pytest.mark.integration
def test_demo_cars_report_what_they_run_on_and_no_secret_is_on_a_command_line(
    demo: Demo, tmp_path: Path
) -> None:
    values = read_env_file(tmp_path / ".freecar" / "demo.env")
    url = values["FREECAR_DATABASE_URL"]

    def states() -> list[tuple[str, str, float | None, float | None]]:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT v.id, v.fuel_type, s.fuel_pct, s.battery_pct FROM vehicles v"
                " JOIN vehicle_state s ON s.vehicle_id = v.id WHERE v.id LIKE 'sh-%'"
            ).fetchall()
        return [(str(a), str(b), c, d) for a, b, c, d in rows]

    wait_until(lambda: len(states()) == 60, what="every demo car's first fix", timeout=WAIT_S)
    kinds = set()
    for vid, fuel_type, fuel, battery in states():
        kinds.add(fuel_type)
        reported = (fuel is not None, battery is not None)
        expected = {"electric": (False, True), "hybrid": (True, True)}.get(fuel_type, (True, False))
        assert reported == expected, (vid, fuel_type, fuel, battery)
    assert {"electric", "hybrid", "petrol"} <= kinds

    processes = descendants(demo.process.pid)
    commands = {pid: proc_text(pid, "cmdline") for pid in processes}
    hubs = [pid for pid, cmd in commands.items() if re.search(r"-m freecar hub\b", cmd)]
    assert hubs, commands
    hub_env = proc_text(hubs[0], "environ")
    signing_key = re.search(r"FREECAR_HUB_SIGNING_KEY=(\S+)", hub_env)
    assert signing_key is not None
    secrets = {signing_key.group(1)}
    for name in ("FREECAR_MQTT_URL", "FREECAR_MQTT_ADMIN_URL"):
        password = urlsplit(values[name]).password
        assert password
        secrets.add(password)
    # The demo's own processes, the services', the components' and their children.
    assert len(commands) >= 8, commands
    for pid, command in commands.items():
        for secret in secrets:
            assert secret not in command, f"a secret on the command line of {pid}: {command}"

    assert demo.stop() == 0, demo.output()
    output = demo.output()
    assert "WorkerLostError" not in output
    assert "Traceback" not in output
    assert not (tmp_path / ".freecar" / "demo.env").exists()


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.integration
def test_a_killed_demo_leaves_no_process_behind(demo: Demo) -> None:
    """A terminal closed or `kill -9` on the demo: its components and services go with it.

    Before, the worker stayed: told to stop as its Redis went away, it tried forever to
    send Redis its farewell heartbeat.
    """
    processes = descendants(demo.process.pid)
    assert len(processes) >= 8, processes
    demo.kill()
    assert poll(lambda: not any(alive(pid) for pid in processes), timeout=WAIT_S), {
        pid: proc_text(pid, "cmdline") for pid in processes if alive(pid)
    }
