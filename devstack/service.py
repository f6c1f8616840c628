"""One server process: launch it, wait until it answers, stop it, kill it, start it again.

Every service keeps its port and its directory for its whole life, so a test can stop the
database or the broker mid-stream and start it again where clients expect it. Readiness is
bounded polling of a real request (SQL, PING, MQTT CONNECT), never a sleep that hopes.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from devstack.errors import PortInUseError, ServiceStartError
from devstack.ports import free_port
from devstack.procs import kill_processes_under

if TYPE_CHECKING:
    from pathlib import Path

    from devstack.accounts import Account

# A service that has not answered after this long is broken, not slow: PostgreSQL with
# TimescaleDB preloaded answers in well under a second here, the others in milliseconds.
DEFAULT_READY_TIMEOUT = 60.0
# A graceful stop that takes longer than this is turned into a kill.
DEFAULT_STOP_TIMEOUT = 30.0
# Poll quickly at first (most services answer within 50 ms), then back off to this.
MAX_POLL_INTERVAL = 0.1
# On the first start only, a port taken by someone else between our probe and the bind
# is replaced by a new one this many times.
PORT_ATTEMPTS = 5
# Lines of the service's log quoted in errors.
LOG_TAIL_LINES = 25
# Substring every server here prints when bind(2) fails with EADDRINUSE.
ADDRESS_IN_USE = "address already in use"


class Service(ABC):
    """A server process owned by a stack, on a fixed loopback port."""

    name: ClassVar[str]
    """Short name used in messages and file names."""
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    """The signal that asks this server to shut down cleanly."""

    def __init__(
        self,
        *,
        workdir: Path,
        log_path: Path,
        port: int | None = None,
        account: Account | None = None,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
    ) -> None:
        self.workdir = workdir
        self.log_path = log_path
        self.account = account
        self.ready_timeout = ready_timeout
        self._port = port if port is not None else free_port()
        self._port_settled = False
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- what each server defines -------------------------------------------------------

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground on `self.port`."""

    @abstractmethod
    def is_ready(self) -> bool:
        """Make one real request; True once the server answers it."""

    def prepare(self) -> None:
        """Write whatever the next launch needs (config files for the current port)."""
        self.workdir.mkdir(exist_ok=True)

    def environment(self) -> dict[str, str]:
        """The environment the server runs with."""
        return dict(os.environ)

    def after_exit(self) -> None:
        """Clean up after the process has exited: nothing it started may outlive it."""
        kill_processes_under(self.workdir, {self.executable})

    # -- state --------------------------------------------------------------------------

    @property
    def executable(self) -> str:
        """The resolved path of the program this service runs."""
        return os.path.realpath(self.command()[0])

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1; the same across stop and start."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ----------------------------------------------------------------------

    def launch(self) -> None:
        """Start the process without waiting for it to answer."""
        if self.running:
            return
        raise_open_files_limit()
        self.prepare()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            account = self.account
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C meant for the owner must not reach the servers,
                # which the owner stops in order, and a hard kill can take the whole group.
                start_new_session=True,
                # Drop to the service account in the child, right before exec.
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
            )

    def wait_ready(self) -> None:
        """Poll until the server answers; on the first start, move to a new port if taken."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._poll_until_ready()
            except PortInUseError:
                if self._port_settled or attempt == PORT_ATTEMPTS - 1:
                    raise
                self._port = free_port()
                self.launch()
            else:
                self._port_settled = True
                return

    def start(self) -> None:
        """Start the server (on the same port and data as before) and wait until it answers."""
        if self.running:
            return
        self.launch()
        self.wait_ready()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Ask the server to shut down cleanly; kill it if it has not within `timeout`."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.kill(process.pid, self.stop_signal)
                process.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server and everything it started, as a crash would."""
        process = self._process
        if process is None:
            return
        # poll() reaps an exited process; only a live (or unreaped) one still owns its pid.
        if process.poll() is None:
            self._kill_tree(process)
        self._reap()

    def restart(self) -> None:
        """Stop cleanly and start again on the same port with the same data."""
        self.stop()
        self.start()

    def _kill_tree(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait()
        self.after_exit()

    # -- readiness ----------------------------------------------------------------------

    def _poll_until_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        interval = 0.005
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                self._raise_exited(process)
            if self.is_ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceStartError(
                    f"{self.name} did not answer on 127.0.0.1:{self.port} within "
                    f"{self.ready_timeout:.0f} s; it was killed.\n{self.describe_log()}"
                )
            time.sleep(interval)
            interval = min(interval * 2, MAX_POLL_INTERVAL)

    def _raise_exited(self, process: subprocess.Popen[bytes] | None) -> None:
        code = process.returncode if process is not None else None
        self._reap()
        tail = self.log_tail()
        message = f"{self.name} exited with code {code} before answering.\n{self.describe_log()}"
        if ADDRESS_IN_USE in tail.lower():
            raise PortInUseError(message)
        raise ServiceStartError(message)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines the server logged since its latest launch."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe_log(self) -> str:
        """The log's tail, introduced by where the whole log is."""
        tail = self.log_tail() or "(nothing logged)"
        return f"Last lines of {self.log_path}:\n{tail}"


def raise_open_files_limit() -> None:
    """Lift this process's soft open-files limit to the hard one; servers inherit it.

    Mosquitto never raises its own limit, so under a common default of 1,024 it would refuse
    a simulated fleet beyond about a thousand cars.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
