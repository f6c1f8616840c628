"""The demo's supervisor with real child processes."""

from __future__ import annotations

import io
import sys
import time

from support.waiting import poll

import freecar.supervisor as module
from freecar.supervisor import Component, Supervisor


def test_relays_output_restarts_a_crashed_child_and_stops_the_rest() -> None:
    out = io.StringIO()
    crasher = Component(
        "crasher", [sys.executable, "-c", "print('boom', flush=True); raise SystemExit(3)"]
    )
    sleeper = Component(
        "sleeper", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]
    )
    supervisor = Supervisor([sleeper, crasher], out=out)
    supervisor.start()
    try:
        assert poll(lambda: "crasher | boom" in out.getvalue())
        deadline = time.monotonic() + 20
        while "restarting" not in out.getvalue() and time.monotonic() < deadline:
            supervisor.poll()
        assert "crasher exited with 3; restarting" in out.getvalue()
        assert poll(lambda: out.getvalue().count("crasher | boom") >= 2)
        assert "sleeper |" in out.getvalue()
    finally:
        supervisor.stop()
    assert all(r.popen.poll() is not None for r in supervisor._running)


def test_a_child_that_ignores_sigterm_is_killed() -> None:
    stubborn = Component(
        "stubborn",
        [
            sys.executable,
            "-c",
            (
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                " print('ready', flush=True); time.sleep(600)"
            ),
        ],
    )
    out = io.StringIO()
    supervisor = Supervisor([stubborn], out=out)
    supervisor.start()
    assert poll(lambda: "ready" in out.getvalue())
    grace, module.STOP_GRACE_S = module.STOP_GRACE_S, 0.5
    try:
        supervisor.stop()
    finally:
        module.STOP_GRACE_S = grace
    assert supervisor._running[0].popen.returncode is not None
    assert "ignored SIGTERM" in out.getvalue()


# A component that, like Celery's prefork worker, has children of its own: on SIGTERM it
# tells its child to finish and waits for it. A child that gets SIGTERM itself says so.
PARENT_WITH_CHILD = """
import signal, subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c", '''
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("child: got SIGTERM", flush=True), sys.exit(1)))
print("child: up", flush=True)
sys.stdin.readline()
print("child: finished its work", flush=True)
'''],
    stdin=subprocess.PIPE, text=True,
)
def stop(*_):
    child.stdin.write("stop\\n"); child.stdin.flush(); child.wait()
    print("parent: stopped after its child", flush=True); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("parent: up", flush=True)
signal.pause()
"""


def test_stop_signals_the_component_and_lets_it_stop_its_own_children() -> None:
    out = io.StringIO()
    supervisor = Supervisor(
        [Component("family", [sys.executable, "-c", PARENT_WITH_CHILD])], out=out
    )
    supervisor.start()
    assert poll(lambda: "child: up" in out.getvalue() and "parent: up" in out.getvalue())
    supervisor.stop()
    assert poll(lambda: "parent: stopped after its child" in out.getvalue())
    assert "child: finished its work" in out.getvalue()
    assert "child: got SIGTERM" not in out.getvalue()
    assert supervisor._running[0].popen.returncode == 0


def test_a_component_may_ask_for_a_longer_grace() -> None:
    slow = Component(
        "slow",
        [
            sys.executable,
            "-c",
            (
                "import signal, sys, time\n"
                "def stop(*_):\n"
                "    time.sleep(1.5); print('slow: done', flush=True); sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, stop)\n"
                "print('ready', flush=True); signal.pause()\n"
            ),
        ],
        stop_grace_s=30.0,
    )
    out = io.StringIO()
    supervisor = Supervisor([slow], out=out)
    supervisor.start()
    assert poll(lambda: "ready" in out.getvalue())
    grace, module.STOP_GRACE_S = module.STOP_GRACE_S, 0.5
    try:
        supervisor.stop()
    finally:
        module.STOP_GRACE_S = grace
    assert supervisor._running[0].popen.returncode == 0
    assert "ignored SIGTERM" not in out.getvalue()
