"""Simulator scale: how many cars one `freecar sim` process keeps at one fix every 5 s.

Each step runs `freecar sim` as a tester would (a child process against devstack's broker,
every car reporting every 5 s whether driving or parked), waits until every car has
reported, lets it settle, then counts what a plain subscriber receives over a fixed window.
A step is sustained when the fixes delivered reach 95 % of the nominal rate (cars x 0.2/s;
turns add a few more). Steps double until one is not sustained, the broker's open-files
limit would be exceeded, or the time budget is spent. Cars keep the default disk (SQLite)
queues while this process may open enough files for them (four per car), in-memory
queues beyond that; each result says which.

CPU is measured twice: over the steady window from /proc (the cost of running N cars),
and over the child's whole life from its rusage (start-up and shutdown included).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.report import Result, line_chart
from protocol.broker_url import BrokerUrl
from simulator.limits import needed_descriptors

if TYPE_CHECKING:
    from bench.report import Report
    from devstack.stack import DevStack

SUITE = "simulator"
RATE_HZ: Final = 0.2  # one fix every 5 s, driving or parked
SUSTAINED: Final = 0.95
STEPS: Final = (500, 1000, 2000, 4000, 8000)
QUICK_STEPS: Final = (100, 200)
# Cars started per second: fast enough to ramp 4,000 cars in well under a minute (SQLite
# queue creation paces it to about 220/s on this machine anyway).
CONNECT_RATE: Final = 400
# After the last car's first fix: time for the fleet to settle, then the window that is
# counted. Windows are whole multiples of the 5 s interval, so that every car contributes
# the same number of fixes wherever its timer falls within the window.
SETTLE_S: Final = 3.0
WINDOW_S: Final = 10.0
QUICK_SETTLE_S: Final = 1.0
QUICK_WINDOW_S: Final = 5.0
# No new step starts after this long: the suite stays within about three minutes.
BUDGET_S: Final = 130.0
QUICK_BUDGET_S: Final = 30.0
# Time for every car to report once: a slow ramp is a result, not a hang.
FIRST_FIX_PER_CAR_S: Final = 0.02
FIRST_FIX_BASE_S: Final = 30.0
STOP_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Step:
    """What one fleet size achieved."""

    vehicles: int
    delivered: float  # fixes/s seen by the subscriber in the window
    window_cpu_s: float
    window_s: float
    total_cpu_s: float
    total_s: float

    @property
    def expected(self) -> float:
        """The nominal rate: every car once every 5 s."""
        return self.vehicles * RATE_HZ

    @property
    def ratio(self) -> float:
        """Delivered over expected."""
        return self.delivered / self.expected

    @property
    def sustained(self) -> bool:
        """Whether the fleet kept up."""
        return self.ratio >= SUSTAINED

    @property
    def cpu_per_thousand_per_minute(self) -> float:
        """CPU seconds per 1,000 cars per minute of steady running."""
        return self.window_cpu_s / (self.vehicles / 1000) / (self.window_s / 60)


class FixCounter:
    """Counts telemetry fixes under a topic root, and which cars sent them."""

    def __init__(self, url: str, root: str) -> None:
        broker = BrokerUrl.parse(url)
        self.count = 0
        self.vehicles: set[str] = set()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{root}-counter", protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set(broker.username, broker.password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{root}/+/telemetry", 1)
        if not self._subscribed.wait(10):
            raise RuntimeError("the benchmark's subscriber got no SUBACK")

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        # A backfill array holds several fixes: count each one's "seq" key, which is cheaper
        # than parsing and keeps the counter far ahead of the fleet.
        fixes = message.payload.count(b'"seq"')
        with self._lock:
            self.count += fixes
            self.vehicles.add(message.topic.split("/")[-2])

    def snapshot(self) -> tuple[int, int]:
        """(fixes counted, distinct cars seen)."""
        with self._lock:
            return self.count, len(self.vehicles)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def _open_files_limit(pid: int | None) -> int | None:
    """The soft open-files limit of a running process, or None if unknown."""
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            value = line.split()[3]
            return None if value == "unlimited" else int(value)
    return None


def measure(
    url: str, vehicles: int, *, settle_s: float, window_s: float, disk: bool
) -> Step | None:
    """Run one fleet size; None if its cars never all reported."""
    root = f"bench-sim-{vehicles}-{os.getpid()}"
    counter = FixCounter(url, root)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    command = [
        sys.executable, "-m", "freecar", "sim", "--vehicles", str(vehicles),
        "--rate", str(RATE_HZ), "--parked-rate", str(RATE_HZ), "--json",
        "--progress-interval", "0", "--topic-root", root, "--client-prefix", f"{root}-",
        "--connect-rate", str(CONNECT_RATE), "--drain-timeout", "5",
        *([] if disk else ["--memory-queue"]),
    ]  # fmt: skip
    env = {**os.environ, "FREECAR_MQTT_URL": url}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + FIRST_FIX_BASE_S + vehicles * FIRST_FIX_PER_CAR_S
        while counter.snapshot()[1] < vehicles and time.monotonic() < deadline:
            if process.poll() is not None:
                return None
            time.sleep(0.1)
        if counter.snapshot()[1] < vehicles:
            return None
        time.sleep(settle_s)
        count_before, cpu_before, window_start = (
            counter.snapshot()[0],
            _cpu_seconds(process.pid),
            time.monotonic(),
        )
        time.sleep(window_s)
        count_after, cpu_after, window_end = (
            counter.snapshot()[0],
            _cpu_seconds(process.pid),
            time.monotonic(),
        )
        process.send_signal(signal.SIGTERM)
        process.wait(STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        counter.close()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    span = window_end - window_start
    return Step(
        vehicles=vehicles,
        delivered=(count_after - count_before) / span,
        window_cpu_s=cpu_after - cpu_before,
        window_s=span,
        total_cpu_s=total_cpu,
        total_s=time.monotonic() - started,
    )


def run(report: Report, stack: DevStack, pictures: Path, *, quick: bool = False) -> None:
    """Step the fleet size up and record what one simulator process sustains."""
    steps = QUICK_STEPS if quick else STEPS
    settle_s, window_s = (QUICK_SETTLE_S, QUICK_WINDOW_S) if quick else (SETTLE_S, WINDOW_S)
    budget = QUICK_BUDGET_S if quick else BUDGET_S
    broker_files = _open_files_limit(stack.mqtt.pid)
    sim_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    report.context["Open files: broker / simulator (hard)"] = f"{broker_files} / {sim_files}"
    started = time.monotonic()
    results: list[tuple[Step, bool]] = []
    for vehicles in steps:
        # Every car is a socket at the broker and a socket plus a queue file here.
        if broker_files is not None and vehicles + 100 > broker_files:
            print(f"  {vehicles} cars: skipped, the broker may open {broker_files} files")
            break
        disk = needed_descriptors(vehicles, disk_queue=True) <= sim_files
        if needed_descriptors(vehicles, disk_queue=False) > sim_files:
            print(f"  {vehicles} cars: skipped, this process may open {sim_files} files")
            break
        step = measure(
            stack.info.mqtt_url, vehicles, settle_s=settle_s, window_s=window_s, disk=disk
        )
        if step is None:
            print(f"  {vehicles} cars: not every car reported; stopping here")
            break
        results.append((step, disk))
        queues = "disk" if disk else "memory"
        report.add(
            Result(
                SUITE,
                f"{vehicles:,} cars ({queues} queues): fixes/s delivered",
                step.delivered,
                "fixes/s",
                note=f"expected {step.expected:,.0f} ({step.ratio:.0%}); "
                f"{step.cpu_per_thousand_per_minute:.1f} CPU s per 1,000 cars per minute "
                f"steady, {step.total_cpu_s:.0f} CPU s over the whole {step.total_s:.0f} s run",
            )
        )
        if not step.sustained or time.monotonic() - started > budget:
            break
    sustained = [(step, disk) for step, disk in results if step.sustained]
    if sustained:
        best, disk = sustained[-1]
        report.add(
            Result(
                SUITE,
                "most cars sustained at one fix per 5 s",
                best.vehicles,
                "cars",
                note=f"delivered >= {SUSTAINED:.0%} of expected; "
                f"{'disk (SQLite)' if disk else 'in-memory'} queues",
            )
        )
        report.add(
            Result(
                SUITE,
                f"CPU per 1,000 cars per minute at {best.vehicles:,} cars",
                best.cpu_per_thousand_per_minute,
                "CPU s",
                note="steady window, from /proc; the simulator process alone",
            )
        )
    if results:
        steps_run = [step for step, _ in results]
        line_chart(
            report,
            SUITE,
            pictures / "simulator.png",
            x_label="simulated cars (one process)",
            y_label="fixes/s",
            series={
                "expected (1 fix / 5 s per car)": [(s.vehicles, s.expected) for s in steps_run],
                "delivered to a subscriber": [(s.vehicles, s.delivered) for s in steps_run],
            },
        )
