"""Run the demo's components as child processes, restart them when they crash, stop them cleanly.

Children get their own session so a terminal's Ctrl-C reaches only the supervisor, which
then stops them in reverse start order: SIGTERM to each component's own process, a grace
period, then SIGKILL to its whole process group. Only the component's process gets the
SIGTERM: one with processes of its own (the worker's pool) stops them in its own order,
as it would under systemd or Docker, instead of having them killed under it mid-task. On
Linux each child also gets a parent-death signal, so a `kill -9` of the supervisor takes
them along.

Secrets reach the children through their environment, never their command line, which
every user of the machine can read (`ps`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

# Long enough for a hub to commit its last batch, short enough that Ctrl-C feels prompt.
STOP_GRACE_S = 10.0
# A component that keeps dying is given up on rather than restarted in a tight loop.
MAX_RESTARTS = 5
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Component:
    """A long-running child process: a name for its log lines and the command to run."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    stop_grace_s: float | None = None
    """How long it may take to stop after SIGTERM (None: STOP_GRACE_S)."""


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this child if the supervisor dies (runs after fork)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# How often stop() looks whether a component has exited.
EXIT_POLL_S = 0.05


def _exited(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` for child `pid` to exit, without reaping it; whether it did."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped already
            return True
        if found is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(EXIT_POLL_S)


class _Running:
    def __init__(self, component: Component, popen: subprocess.Popen[bytes]) -> None:
        self.component = component
        self.popen = popen
        self.restarts = 0
        self.given_up = False


class Supervisor:
    """Starts components, relays their output with a name prefix, restarts crashed ones."""

    def __init__(
        self,
        components: Sequence[Component],
        *,
        base_env: Mapping[str, str] | None = None,
        out: IO[str] | None = None,
    ) -> None:
        self._components = list(components)
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._out = out or sys.stdout
        self._out_lock = threading.Lock()
        self._running: list[_Running] = []
        self._stopping = threading.Event()

    def _spawn(self, component: Component) -> subprocess.Popen[bytes]:
        popen = subprocess.Popen(
            list(component.argv),
            env={**self._base_env, **component.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl; no locks taken
        )
        threading.Thread(
            target=self._relay, args=(component.name, popen), daemon=True, name=component.name
        ).start()
        return popen

    def _relay(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        for raw in popen.stdout:
            line = raw.decode(errors="replace").rstrip()
            with self._out_lock:
                print(f"{name:>8} | {line}", file=self._out, flush=True)

    def start(self) -> None:
        """Start every component in order."""
        for component in self._components:
            self._running.append(_Running(component, self._spawn(component)))

    def poll(self) -> None:
        """Restart components that exited while we were not stopping."""
        for running in self._running:
            code = running.popen.poll()
            if code is None or running.given_up or self._stopping.is_set():
                continue
            if running.restarts >= MAX_RESTARTS:
                running.given_up = True
                self._say(f"{running.component.name} exited with {code}; giving up")
                continue
            delay = RESTART_BACKOFF_S[min(running.restarts, len(RESTART_BACKOFF_S) - 1)]
            self._say(f"{running.component.name} exited with {code}; restarting in {delay}s")
            if self._stopping.wait(delay):
                return
            running.restarts += 1
            running.popen = self._spawn(running.component)

    def run_until(self, should_stop: Callable[[], bool], interval_s: float = 0.5) -> None:
        """Supervise until should_stop() is true."""
        while not should_stop():
            self.poll()
            time.sleep(interval_s)

    def stop(self) -> None:
        """Stop all components, newest first, escalating to SIGKILL after a grace period."""
        self._stopping.set()
        for running in reversed(self._running):
            popen = running.popen
            grace = running.component.stop_grace_s
            if popen.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            if not _exited(popen.pid, STOP_GRACE_S if grace is None else grace):
                self._say(f"{running.component.name} ignored SIGTERM; killing it")
            # The component's process is gone (or is being killed) but not yet reaped, so
            # its group id still names its group: whatever it left behind goes with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()

    def _say(self, message: str) -> None:
        with self._out_lock:
            print(f"{'demo':>8} | {message}", file=self._out, flush=True)
