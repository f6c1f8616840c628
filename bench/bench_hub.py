"""Hub ingest: fixes per second through one hub process, and what it is measured against.

Ceilings first, on the same broker and server: a bare paho subscriber draining a backlog
(QoS 1, JSON parsed, nothing else; MQTT 5 as the hub speaks, and MQTT 3.1.1 to show what
MQTT 5 costs paho) and bare binary COPY into an unindexed table. Then the hub itself:

- **Drain**: messages queued for the hub's persistent session while it is away, then timed
  from start until every fix is committed. Nothing else runs meanwhile, so this is the
  cleanest measure of the hub's own cost (the load generator would compete for the same two
  cores otherwise). CPU time per fix is reported too: it is steadier than wall time on a
  shared machine. The fixes are a contract 1.1 unit's (a `seq` per vehicle and a
  `queue_id`), and the hub drains with its storage acknowledgements off and on, in turns,
  each on a fleet of its own: what the acknowledgements cost in hub CPU, in broker CPU and
  in `stored` messages per telemetry message. Each fleet's first fix is drained before
  the clock starts (the hub's first word to a new queue is a one-off, not the steady cost).
- **Rising load**: a publisher process offers single-fix messages at rising rates (QoS 1,
  a bounded window of unacknowledged messages) while the hub runs; per step, the rate the
  hub commits and the publish-to-commit latency (p50/p99, from each fix's `ts`, stamped at
  publish) until the hub saturates (commits fall behind or p99 passes 1 s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import resource
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.bench_storage import make_rows
from bench.report import Report, Result, bar_chart, line_chart
from db.migrate import migrate
from db.telemetry import COPY_TYPES
from devstack.stack import start_stack
from hub.service import Hub, tune_gc
from hub.settings import HubSettings, MqttProtocol
from protocol.broker_url import BrokerUrl
from protocol.telemetry import Telemetry, encode_telemetry

if TYPE_CHECKING:
    from devstack.stack import DevStack
    from hub.batch import Batch

SUITE: Final = "hub ingest"
# A suite of its own: COPY runs at many times the MQTT rates and would flatten their bars.
STORAGE_SUITE: Final = "hub vs bare COPY"
LOAD_SUITE: Final = "hub under load"
# The fleet the rising load publishes for (the drains each have their own).
LOAD_FLEET: Final = "load"
# Vehicles the fixes are spread over: a small city's fleet, so per-vehicle state and filter
# memory are exercised, not just one hot row.
VEHICLES: Final = 1000
# Drains with storage acknowledgements off and on, in turns (off, on, off, on): the best of
# each is reported, so a moment of noise from the machine's other tenants costs neither.
DRAIN_ROUNDS: Final = 2
QUICK_DRAIN_ROUNDS: Final = 1
# The backlog each drain consumes: long enough (several seconds) to swamp start-up, short
# enough that publishing it three times stays within the time budget.
BACKLOG: Final = 60_000
QUICK_BACKLOG: Final = 6_000
COPY_ROWS: Final = 100_000
QUICK_COPY_ROWS: Final = 10_000
# Offered load, fixes per second, one fix per message.
LOAD_STEPS: Final = (2_000, 5_000, 10_000, 15_000, 20_000, 25_000, 30_000)
QUICK_LOAD_STEPS: Final = (1_000, 3_000)
STEP_S: Final = 4.0
QUICK_STEP_S: Final = 1.0
# Saturated: less than this share of a step's fixes is committed within the latency target,
# or p99 publish-to-commit latency exceeds it.
KEEP_UP: Final = 0.9
P99_TARGET_MS: Final = 1000.0
# Unacknowledged messages a publisher may have: a paho publisher without a window collapses
# once its queue grows (measured: 11k -> 1.4k msg/s).
PUBLISH_WINDOW: Final = 1000
RECEIVE_MAXIMUM: Final = 10_000
DRAIN_TIMEOUT_S: Final = 120.0
POLL_S: Final = 0.02


def _fix(i: int, ts: int) -> bytes:
    """Fix `i` of the fleet: vehicle `i % VEHICLES`, its `seq` `i // VEHICLES`, its queue."""
    vehicle = i % VEHICLES
    # Each car creeps north-east a metre or so per fix: plausible for the jump filter.
    step = i // VEHICLES
    fix = Telemetry(
        seq=step,
        ts=ts,
        lat=31.0 + vehicle * 1e-3 + step * 1e-5,
        lon=121.0 + vehicle * 1e-3 + step * 1e-5,
        speed_kmh=36.0,
        heading=45.0,
        odometer_km=1000.0 + step * 0.01,
        fuel_pct=60.0,
        locked=False,
        doors_open=False,
        engine_on=True,
        accuracy_m=4.0,
        # A unit of contract 1.1 announces its queue (any id will do, one per vehicle).
        queue_id=vehicle + 1,
    )
    return encode_telemetry(fix)


def _vehicle(fleet: str, vehicle: int) -> str:
    return f"{fleet}-car-{vehicle:05d}"


def _topic(root: str, fleet: str, i: int) -> str:
    return f"{root}/{_vehicle(fleet, i % VEHICLES)}/telemetry"


def _register_fleet(database_url: str, fleet: str) -> None:
    """Put a fleet of benchmark cars in the inventory: the hub stores nothing for unknown ones."""
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO vehicles (id, plate, make, model, category, fuel_type,"
            " price_hour_minor, price_day_minor, currency)"
            " VALUES (%s, %s, 'Bench', 'Car', 'standard', 'petrol', 1000, 9000, 'EUR')",
            [(_vehicle(fleet, v), f"{fleet}-{v:05d}".upper()) for v in range(VEHICLES)],
        )


def _client(url: str, client_id: str, *, v5: bool) -> tuple[mqtt.Client, BrokerUrl]:
    broker = BrokerUrl.parse(url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    return client, broker


def _connect(client: mqtt.Client, broker: BrokerUrl, *, v5: bool) -> None:
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call] # paho's Properties is unannotated
        properties.SessionExpiryInterval = 600
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        client.connect(broker.host, broker.port, clean_start=False, properties=properties)
    else:
        client.connect(broker.host, broker.port)
    client.loop_start()
    if not connected.wait(30):
        raise RuntimeError("bench client could not connect")


def _publish_backlog(  # noqa: PLR0913 - one backlog's coordinates
    url: str, client_id: str, root: str, count: int, *, fleet: str = "bench", first: int = 0
) -> None:
    """Publish fixes `first` to `first + count` at QoS 1 with a bounded window, at full speed."""
    client, broker = _client(url, client_id, v5=False)
    window = threading.BoundedSemaphore(PUBLISH_WINDOW)
    client.on_publish = lambda *_: window.release()
    _connect(client, broker, v5=False)
    # Fix i is stamped i ms after the first fix of fleet's clock, which started a
    # backlog's length ago (an hour: past every drain, and well inside the age filter).
    start = int(time.time() * 1000) - 3_600_000
    for i in range(first, first + count):
        window.acquire()
        client.publish(_topic(root, fleet, i), _fix(i, start + i), qos=1)
    for _ in range(PUBLISH_WINDOW):
        window.acquire()
    client.disconnect()
    client.loop_stop()


def _bare_subscriber(url: str, root: str, count: int, *, v5: bool) -> float:
    """Drain a `count` backlog with a bare paho subscriber; messages per second."""
    name = f"{root}-bare{5 if v5 else 3}"
    topic = f"{root}/+/telemetry"
    client, broker = _client(url, name, v5=v5)
    _connect(client, broker, v5=v5)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe(topic, qos=1)
    subscribed.wait(30)
    client.disconnect()
    client.loop_stop()
    _publish_backlog(url, f"{name}-pub", root, count)

    received = 0
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        json.loads(message.payload)
        received += 1
        if received >= count:
            done.set()

    client, broker = _client(url, name, v5=v5)
    client.on_message = on_message
    started = time.perf_counter()
    _connect(client, broker, v5=v5)
    done.wait(DRAIN_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return received / elapsed


def _copy_ceiling(database_url: str, count: int) -> float:
    """Bare binary COPY into an unindexed copy of telemetry, in batches like the hub's."""
    rows = make_rows(count, datetime.now(UTC))
    batch = 5_000
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE bench_hub_copy (LIKE telemetry INCLUDING DEFAULTS)")
        conn.commit()
        started = time.perf_counter()
        for first in range(0, count, batch):
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY bench_hub_copy (vehicle_id, ts, seq, lat, lon, speed_kmh, heading,"
                    " odometer_km, fuel_pct, battery_pct, locked, doors_open, engine_on, alarm,"
                    " accuracy_m, extra) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(COPY_TYPES)
                for row in rows[first : first + batch]:
                    copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_hub_copy")
        conn.commit()
    return count / elapsed


def _settings(
    stack: DevStack, database_url: str, root: str, *, storage_acks: bool = True
) -> HubSettings:
    return HubSettings(
        database_url=database_url,
        redis_url=stack.info.redis_url,
        mqtt_url=stack.info.mqtt_url,
        mqtt_shared_subscriptions=stack.info.mqtt_shared_subscriptions,
        topic_root=root,
        hub_client_id=f"{root}-hub",
        hub_receive_maximum=RECEIVE_MAXIMUM,
        hub_storage_acks=storage_acks,
    )


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Drain:
    """One timed drain: the hub's rate and costs."""

    rate: float
    """Fixes committed per second."""
    cpu_us: float
    """The hub process's CPU per fix, microseconds."""
    broker_cpu_us: float
    """The broker's CPU per fix, microseconds."""
    words: int
    """`stored` messages the hub published while draining."""
    messages: int
    """Telemetry messages drained."""


def _hub_drain(  # noqa: PLR0913 - one drain's coordinates
    stack: DevStack,
    database_url: str,
    root: str,
    count: int,
    *,
    fleet: str,
    storage_acks: bool,
) -> Drain:
    """Time one hub draining a `count` backlog of a fleet of its own."""
    settings = _settings(stack, database_url, root, storage_acks=storage_acks)
    _register_fleet(database_url, fleet)
    url = stack.info.mqtt_url
    with Hub(settings) as hub:
        # Register the session (and its subscriptions), and drain each car's first fix:
        # the answer to a new queue is a one-off, not what a running fleet costs.
        hub.consumer.wait_connected(30)
        _publish_backlog(url, f"{root}-pub", root, VEHICLES, fleet=fleet)
        deadline = time.perf_counter() + DRAIN_TIMEOUT_S
        while hub.stats.fixes_stored < VEHICLES and time.perf_counter() < deadline:
            time.sleep(POLL_S)
    _publish_backlog(url, f"{root}-pub", root, count, fleet=fleet, first=VEHICLES)
    hub = Hub(settings)
    tune_gc()  # as `freecar hub` does
    broker_pid = stack.mqtt.pid
    broker_before = _cpu_seconds(broker_pid) if broker_pid is not None else 0.0
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    hub.start()
    deadline = started + DRAIN_TIMEOUT_S
    while hub.stats.fixes_stored < count and time.perf_counter() < deadline:
        time.sleep(POLL_S)
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    broker_after = _cpu_seconds(broker_pid) if broker_pid is not None else 0.0
    stored = hub.stats.fixes_stored
    hub.shutdown()
    # After the shutdown: the last batch's words go out just after its fixes count as stored.
    words, messages = hub.stats.watermarks_published, hub.stats.messages_received
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    per_fix = 1e6 / max(stored, 1)
    return Drain(
        rate=stored / elapsed,
        cpu_us=cpu * per_fix,
        broker_cpu_us=(broker_after - broker_before) * per_fix,
        words=words,
        messages=messages,
    )


def _drains(
    stack: DevStack, database_url: str, root: str, count: int, rounds: int
) -> tuple[Drain, Drain]:
    """The best drain with storage acknowledgements off, and on, over `rounds` turns each."""
    off: list[Drain] = []
    on: list[Drain] = []
    for turn in range(rounds):
        for storage_acks, drains in ((False, off), (True, on)):
            name = f"{'on' if storage_acks else 'off'}{turn}"
            drains.append(
                _hub_drain(
                    stack,
                    database_url,
                    f"{root}{name}",
                    count,
                    fleet=f"f{name}",
                    storage_acks=storage_acks,
                )
            )
    return max(off, key=lambda d: d.rate), max(on, key=lambda d: d.rate)


def _offer_load(
    url: str,
    root: str,
    steps: tuple[int, ...],
    step_s: float,
    out: Any,  # noqa: ANN401 - a multiprocessing queue
) -> None:
    """Publisher process: each step, publish at the offered rate for step_s; report per step."""
    client, broker = _client(url, f"{root}-load", v5=False)
    window = threading.BoundedSemaphore(PUBLISH_WINDOW)
    client.on_publish = lambda *_: window.release()
    _connect(client, broker, v5=False)
    last_ts = [0] * VEHICLES
    i = 0
    for rate in steps:
        started = time.time()
        published = 0
        while (elapsed := time.time() - started) < step_s:
            # Catch up to the schedule, then nap: bursts of at most a few ms of traffic.
            due = int(elapsed * rate)
            while published < due:
                vehicle = i % VEHICLES
                ts = max(int(time.time() * 1000), last_ts[vehicle] + 1)
                last_ts[vehicle] = ts
                window.acquire()
                client.publish(_topic(root, LOAD_FLEET, i), _fix(i, ts), qos=1)
                published += 1
                i += 1
            time.sleep(0.002)
        out.put((rate, started, time.time(), published))
    for _ in range(PUBLISH_WINDOW):
        window.acquire()
    client.disconnect()
    client.loop_stop()
    out.put(None)


class _Commits:
    """Collects (commit time, fix timestamps) per batch from the hub's writer."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[datetime]]] = []

    def __call__(self, batch: Batch, committed_at: float) -> None:
        self.batches.append((committed_at, [row.ts for row in batch.rows]))

    def window(self, start: float, end: float) -> tuple[int, list[float]]:
        """Fixes published in [start, end): how many committed in time, and all latencies (ms).

        "In time" is within the latency target.
        """
        in_time = 0
        latencies: list[float] = []
        for committed_at, stamps in self.batches:
            for ts in stamps:
                sent = ts.timestamp()
                if start <= sent < end:
                    latency = committed_at - sent
                    latencies.append(latency * 1000)
                    in_time += latency * 1000 <= P99_TARGET_MS
        return in_time, latencies


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def _rising_load(  # noqa: PLR0913 - one suite's knobs
    report: Report,
    stack: DevStack,
    database_url: str,
    root: str,
    pictures: Path,
    *,
    steps: tuple[int, ...],
    step_s: float,
) -> None:
    commits = _Commits()
    hub = Hub(_settings(stack, database_url, root), on_commit=commits)
    tune_gc()
    hub.start()
    hub.consumer.wait_connected(30)
    # Spawned, not forked: a fork would copy the hub's threads' locks mid-flight.
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    publisher = context.Process(
        target=_offer_load, args=(stack.info.mqtt_url, root, steps, step_s, out), daemon=True
    )
    publisher.start()
    windows: list[tuple[int, float, float, int]] = []
    saturated = False
    try:
        while True:
            try:
                item = out.get(timeout=1.0)
            except queue.Empty:
                if not publisher.is_alive():
                    raise RuntimeError("the load publisher died") from None
                continue
            if item is None:
                break
            windows.append(item)
        publisher.join(60)
        # Let the last step's fixes commit before measuring their latency.
        total = sum(published for *_, published in windows)
        deadline = time.perf_counter() + DRAIN_TIMEOUT_S
        while hub.stats.fixes_stored < total and time.perf_counter() < deadline:
            time.sleep(POLL_S)
    finally:
        hub.shutdown()
        if publisher.is_alive():
            publisher.kill()
    offered_line, committed_line, p50_line, p99_line = [], [], [], []
    for rate, start, end, published in windows:
        if saturated:
            break
        in_time, latencies = commits.window(start, end)
        duration = end - start
        # Throughput that counts: fixes committed within the latency target.
        achieved = in_time / duration
        p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        saturated = in_time < KEEP_UP * published or p99 > P99_TARGET_MS
        note = f"published {published / duration:,.0f}/s; p50 {p50:,.0f} ms, p99 {p99:,.0f} ms"
        if saturated:
            note += "; saturated"
        report.add(Result(LOAD_SUITE, f"offered {rate:,} fixes/s", achieved, "fixes/s", note=note))
        offered_line.append((float(rate), published / duration))
        committed_line.append((float(rate), achieved))
        p50_line.append((float(rate), p50))
        p99_line.append((float(rate), p99))
    line_chart(
        report,
        LOAD_SUITE,
        pictures / "hub-load-throughput.png",
        x_label="offered fixes/s",
        y_label="fixes/s",
        series={"published": offered_line, "committed by the hub": committed_line},
    )
    line_chart(
        report,
        LOAD_SUITE,
        pictures / "hub-load-latency.png",
        x_label="offered fixes/s",
        y_label="publish to commit, ms",
        series={"p50": p50_line, "p99": p99_line},
    )


def run(report: Report, stack: DevStack, pictures: Path, *, quick: bool) -> None:
    """Measure the ceilings, the hub's drain, and the hub under rising load."""
    backlog = QUICK_BACKLOG if quick else BACKLOG
    database_url = stack.create_database("bench_hub")
    status = migrate(database_url)
    _register_fleet(database_url, LOAD_FLEET)
    report.context["Hub MQTT"] = f"{stack.info.mqtt_broker} {stack.info.mqtt_version}"
    report.context["Hub telemetry table"] = "hypertable" if status.timescaledb else "plain"
    root = f"bench{os.getpid()}"

    copy = _copy_ceiling(database_url, QUICK_COPY_ROWS if quick else COPY_ROWS)
    # The ceiling is a bare subscriber speaking what the hub speaks on this broker.
    hub_protocol = _settings(stack, database_url, root).protocol()
    ceiling = f"bare paho subscriber, MQTT {hub_protocol.value} (ceiling)"
    bare = _bare_subscriber(
        stack.info.mqtt_url, f"{root}a", backlog, v5=hub_protocol is MqttProtocol.V5
    )
    report.add(Result(SUITE, ceiling, bare, "msg/s", note="QoS 1, JSON parsed, backlog drain"))
    if hub_protocol is MqttProtocol.V5:
        bare3 = _bare_subscriber(stack.info.mqtt_url, f"{root}b", backlog, v5=False)
        report.add(
            Result(SUITE, "bare paho subscriber, MQTT 3.1.1", bare3, "msg/s",
                   note="same, without paho's MQTT 5 properties decoding", baseline=ceiling)
        )  # fmt: skip
    off, on = _drains(
        stack,
        database_url,
        f"{root}c",
        backlog,
        QUICK_DRAIN_ROUNDS if quick else DRAIN_ROUNDS,
    )
    drain = f"hub, MQTT {hub_protocol.value}: drain a backlog"
    report.add(
        Result(
            SUITE,
            f"{drain}, storage acks off",
            off.rate,
            "fixes/s",
            note=f"{off.cpu_us:.0f} us CPU per fix; broker {off.broker_cpu_us:.0f} us per fix",
            baseline=ceiling,
        )
    )
    report.add(
        Result(
            SUITE,
            drain,
            on.rate,
            "fixes/s",
            note=(
                f"storage acks on: {on.rate / off.rate:.2f}x the drain with them off; "
                f"{on.cpu_us:.0f} us CPU per fix; broker {on.broker_cpu_us:.0f} us per fix; "
                f"{on.words / max(on.messages, 1):.3f} stored messages per telemetry message"
            ),
            baseline=ceiling,
        )
    )
    copy_case = "bare binary COPY, no index (ceiling)"
    report.add(Result(STORAGE_SUITE, copy_case, copy, "rows/s"))
    report.add(Result(STORAGE_SUITE, drain, on.rate, "rows/s", baseline=copy_case))
    _rising_load(
        report,
        stack,
        database_url,
        f"{root}d",
        pictures,
        steps=QUICK_LOAD_STEPS if quick else LOAD_STEPS,
        step_s=QUICK_STEP_S if quick else STEP_S,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the hub's suites alone on private services; print their tables as the report has them."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_hub", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of the work: checks it runs")
    parser.add_argument(
        "--pictures", type=Path, help="draw the suites' pictures here (default: nowhere)"
    )
    args = parser.parse_args(argv)
    report = Report()
    with tempfile.TemporaryDirectory() as scratch, start_stack() as stack:
        pictures: Path = args.pictures or Path(scratch)
        run(report, stack, pictures, quick=args.quick)
        for suite in (SUITE, STORAGE_SUITE):
            slug = "".join(c if c.isalnum() else "-" for c in suite).strip("-").replace("--", "-")
            bar_chart(report, suite, pictures / f"{slug}.png")
    for suite in dict.fromkeys(r.suite for r in report.results):
        print(f"\n## {suite}\n\n| case | value | unit | ratio | note |\n|---|---:|---|---|---|")
        for r in (r for r in report.results if r.suite == suite):
            value = f"{r.value:,.0f}" if r.value >= 100 else f"{r.value:,.2f}"
            print(f"| {r.case} | {value} | {r.unit} | {report.ratio(r)} | {r.note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
