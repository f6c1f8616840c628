"""Find and end the processes of a stack by the directory they run in (Linux `/proc`).

Every service of a stack runs with its working directory inside the stack directory:
PostgreSQL changes into its data directory, Redis into `--dir`, and the brokers are
started there. PostgreSQL's backends make themselves session leaders, so they escape the
postmaster's process group; their working directory is what still ties them to the stack.
This module imports only the standard library because the watchdog uses it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection

PROC = Path("/proc")
# readlink of /proc/PID/cwd appends this when the directory has been removed.
DELETED_SUFFIX = " (deleted)"
# Linux's IPC_RMID, from <sys/ipc.h>.
IPC_RMID = 0


def _link(pid: int, name: str) -> str | None:
    try:
        target = str((PROC / str(pid) / name).readlink())
    except OSError:  # gone, or not ours to inspect
        return None
    return target.removesuffix(DELETED_SUFFIX)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def processes_under(directory: Path, executables: Collection[str] | None = None) -> list[int]:
    """Pids of live processes (not this one) whose working directory is `directory` or below.

    With `executables`, only processes running one of those programs (resolved paths) or
    a program inside `directory` count: a shell someone opened in the stack directory to
    read a log is not part of the stack.
    """
    root = os.path.realpath(directory)
    me = os.getpid()
    found: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        cwd = _link(pid, "cwd")
        if cwd is None or not _within(cwd, root):
            continue
        if executables is not None:
            exe = _link(pid, "exe")
            if exe is None or not (exe in executables or _within(exe, root)):
                continue
        if is_alive(pid):
            found.append(pid)
    return found


def is_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie waiting to be reaped."""
    try:
        stat_line = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    state = stat_line.rpartition(")")[2].split()[0]
    return state not in {"Z", "X"}


def signal_group_or_pid(pid: int, signum: signal.Signals) -> None:
    """Send `signum` to the process group led by `pid`, or to `pid` alone if it leads none."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def kill_processes_under(
    directory: Path, executables: Collection[str] | None = None, timeout: float = 10.0
) -> list[int]:
    """SIGKILL every process running under `directory` until none is left or time runs out.

    `executables` narrows the match as in `processes_under`.
    Returns the pids still alive at the deadline (normally none). Looping matters: a
    PostgreSQL postmaster can fork a backend between one scan and the next.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = processes_under(directory, executables)
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def remove_postgres_shared_memory(data_dir: Path) -> None:
    """Remove the SysV segment a killed postmaster left behind, as named in postmaster.pid.

    A postmaster keeps a tiny SysV segment as an interlock against two servers on one data
    directory. A clean shutdown removes it; SIGKILL does not, and it would then outlive the
    data directory until reboot. Call this only once no process of that server is alive.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return
    # Line 7 holds "<key> <shmid>" (see PostgreSQL's miscadmin.h, LOCK_FILE_LINE_SHMEM_KEY).
    min_lines = 7
    if len(lines) < min_lines:
        return
    fields = lines[min_lines - 1].split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        return
    key, shmid = int(fields[0]), int(fields[1])
    libc = ctypes.CDLL(None, use_errno=True)
    # Only remove the segment if the key still names the same id: ids are recycled.
    if libc.shmget(ctypes.c_int(key), ctypes.c_size_t(0), ctypes.c_int(0)) == shmid:
        libc.shmctl(ctypes.c_int(shmid), ctypes.c_int(IPC_RMID), None)


def postgres_data_dirs(directory: Path) -> list[Path]:
    """Data directories (those holding a postmaster.pid) anywhere under `directory`."""
    try:
        return [pid_file.parent for pid_file in directory.rglob("postmaster.pid")]
    except OSError:
        return []
