"""Protocol v1 decoding: what the hub pays per message before it touches the database."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from protocol.telemetry import Telemetry, decode_telemetry, encode_telemetry, encode_telemetry_batch
from protocol.topics import Topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.report import Report

from bench.report import Result

SUITE = "protocol"


def _fix(seq: int) -> Telemetry:
    return Telemetry(
        seq=seq, ts=1_780_000_000_000 + seq, lat=31.2304, lon=121.4737, speed_kmh=32.5,
        heading=181.0, odometer_km=12345.6, fuel_pct=64.0, locked=False, doors_open=False,
        engine_on=True, accuracy_m=4.0,
    )  # fmt: skip


def _rate(work: Callable[[], object], seconds: float) -> float:
    """Calls per second of `work`, run repeatedly for about `seconds`."""
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            work()
        calls += 100
    return calls / (time.perf_counter() - started)


def run(report: Report, seconds: float) -> None:
    """Measure decoding of single fixes and backfill arrays against bare json.loads."""
    single = encode_telemetry(_fix(1))
    batch = encode_telemetry_batch([_fix(i) for i in range(100)])
    topic = "fleet/sh-0001/telemetry"
    ceiling = _rate(lambda: json.loads(single), seconds)
    report.add(Result(SUITE, "json.loads, one fix (stdlib reference)", ceiling, "msg/s"))
    report.add(
        Result(
            SUITE,
            "decode_telemetry, one fix",
            _rate(lambda: decode_telemetry(single), seconds),
            "msg/s",
            note="parse + validate",
            baseline="json.loads, one fix (stdlib reference)",
        )
    )
    array_rate = _rate(lambda: decode_telemetry(batch), seconds)
    report.add(
        Result(
            SUITE,
            "decode_telemetry, 100-fix backfill array",
            array_rate * 100,
            "fixes/s",
            baseline="json.loads, one fix (stdlib reference)",
        )
    )
    report.add(Result(SUITE, "Topic.parse", _rate(lambda: Topic.parse(topic), seconds), "topics/s"))
