"""A stack whose owner is killed with SIGKILL is cleaned up by its watchdog."""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.procs import is_alive

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Starting a stack takes about a second here; a minute means the owner is stuck.
START_WAIT = 60.0
# The watchdog notices the owner's death at once; this bounds the whole cleanup.
CLEANUP_WAIT = 30.0

OWNER = """
import json, sys, time
import psycopg
from devstack.procs import processes_under
from devstack.stack import start_stack

stack = start_stack(sys.argv[1])
conn = psycopg.connect(stack.info.database_url)  # a backend that must die too
data_dir = stack.postgres.data_dir
key = int((data_dir / "postmaster.pid").read_text().splitlines()[6].split()[0])
print(json.dumps({
    "root": str(stack.root),
    "pids": processes_under(stack.root),
    "watchdog": stack._watchdog.pid,
    "shm_key": key,
}), flush=True)
time.sleep(600)
"""


def _shared_memory_exists(key: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.shmget(ctypes.c_int(key), ctypes.c_size_t(0), ctypes.c_int(0))) != -1


@pytest.mark.parametrize("mode", ["auto", "embedded"])
def test_sigkilled_owner_leaves_nothing_behind(mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, mode], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    try:
        assert owner.stdout is not None
        ready, _, _ = select.select([owner.stdout], [], [], START_WAIT)
        assert ready, "the owner did not report its stack in time"
        report = json.loads(owner.stdout.readline())
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()

    root = Path(report["root"])
    pids = [*report["pids"], report["watchdog"]]
    assert len(pids) >= 5
    deadline = time.monotonic() + CLEANUP_WAIT
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if is_alive(pid)]
        if not alive and not root.exists():
            break
        time.sleep(0.05)
    assert [pid for pid in pids if is_alive(pid)] == []
    assert not root.exists()
    assert not _shared_memory_exists(report["shm_key"])
