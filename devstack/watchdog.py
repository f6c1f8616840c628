"""Clean up a stack whose owner died without doing it: `python -m devstack.watchdog DIR EXE...`.

The owner (the test session or `freecar devstack`) starts this small process in its own
session before any service, and keeps the write end of a pipe to its stdin. Nothing is
ever written on it: when the owner exits, however it exits (kill -9 included), the kernel
closes the pipe and this process reads end-of-file. It then kills every process that runs
one of the stack's programs (EXE...) inside the stack directory, PostgreSQL's too even
under another account since the watchdog runs as the owner (root in CI), frees
PostgreSQL's SysV interlock and removes the directory. After a clean teardown there is
nothing left to do and it just exits.

Caveat: a child forked without exec (multiprocessing's "fork" start method) inherits the
write end and keeps the watchdog waiting until that child exits too.

Standard library only: this runs with `python -S` and the package's parent on PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from devstack.errors import DevStackError
from devstack.procs import kill_processes_under, postgres_data_dirs, remove_postgres_shared_memory

READY = b"ready\n"
# Starting an interpreter takes tens of milliseconds; seconds mean it is broken.
START_TIMEOUT = 15.0
# After a clean teardown the watchdog has nothing to kill and exits at once.
CLOSE_TIMEOUT = 30.0
# How long to keep killing processes that show up in the stack directory.
KILL_TIMEOUT = 20.0


class Watchdog:
    """The owner's handle on its watchdog process."""

    def __init__(
        self, process: subprocess.Popen[bytes], pipe: IO[bytes], executables: frozenset[str]
    ) -> None:
        self._process = process
        self._pipe = pipe
        self.executables = executables
        """The programs the stack's services run; only those processes are ever killed."""

    @property
    def pid(self) -> int:
        """The watchdog's pid."""
        return self._process.pid

    @classmethod
    def start(cls, stack_dir: Path, executables: frozenset[str]) -> Watchdog:
        """Start a watchdog for `stack_dir` and wait until it is listening.

        `executables` are the resolved paths of the services' programs: only processes
        running one of them (or a program inside the stack directory) are killed.
        """
        package_parent = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-S", "-m", "devstack.watchdog", str(stack_dir), *sorted(executables)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=env,
            # Its own session: the terminal's Ctrl-C and the owner's process group
            # signals must not reach it, or it could not clean up after them.
            start_new_session=True,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        with process.stdout:
            ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
            line = process.stdout.readline() if ready else b""
        if line != READY:
            process.kill()
            process.wait()
            raise DevStackError(f"the devstack watchdog did not start (exit code {process.poll()})")
        return cls(process, process.stdin, executables)

    def close(self) -> None:
        """Release the watchdog: it sweeps the (already removed) directory and exits."""
        with contextlib.suppress(OSError):
            self._pipe.close()
        try:
            self._process.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def clean_up(stack_dir: Path, executables: frozenset[str]) -> None:
    """Kill the stack's processes, free PostgreSQL's SysV memory, remove the directory."""
    kill_processes_under(stack_dir, executables, KILL_TIMEOUT)
    for data_dir in postgres_data_dirs(stack_dir):
        remove_postgres_shared_memory(data_dir)
    for _ in range(3):
        shutil.rmtree(stack_dir, ignore_errors=True)
        if not stack_dir.exists():
            return
        # A process killed a moment ago may still have been writing a file.
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    """Wait for the owner to go away, then clean up its stack."""
    if not argv:
        sys.stderr.write("usage: python -m devstack.watchdog STACK_DIR [EXECUTABLE...]\n")
        return 2
    stack_dir = Path(argv[0])
    executables = frozenset(argv[1:])
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    os.write(sys.stdout.fileno(), READY)
    # Never write to the owner again: it may be gone by the time there is news.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    stdin = sys.stdin.fileno()
    while os.read(stdin, 4096):
        pass
    clean_up(stack_dir, executables)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
