"""Turning samples into contract fixes: numbering, timestamps, sanitising."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from protocol.telemetry import decode_telemetry, encode_telemetry
from vehicle_agent.backends.base import Position, VehicleStatus
from vehicle_agent.fixes import build_fix, next_stamp
from vehicle_agent.reporting import Sample

STATUS = VehicleStatus(
    locked=True, doors_open=False, engine_on=False, odometer_km=5.0, fuel_pct=40.0
)


@given(st.lists(st.integers(1, 2**45), min_size=1, max_size=50))
def test_seq_and_ts_strictly_increase_whatever_the_clock_does(clock_readings: list[int]) -> None:
    # Readings may repeat or go backwards (NTP steps); stamps must still strictly increase.
    last_seq: int | None = None
    last_ts: int | None = None
    for now_ms in clock_readings:
        seq, ts = next_stamp(last_seq, last_ts, now_ms)
        if last_seq is not None and last_ts is not None:
            assert seq == last_seq + 1
            assert ts > last_ts
        assert ts >= now_ms
        last_seq, last_ts = seq, ts


def test_the_first_stamp_starts_at_zero_and_now() -> None:
    assert next_stamp(None, None, 1_750_000_000_000) == (0, 1_750_000_000_000)


def test_a_sample_without_position_gives_a_status_only_fix() -> None:
    fix = build_fix(Sample(None, STATUS), seq=3, ts=1000, queue_dropped=0)
    assert (fix.lat, fix.lon, fix.speed_kmh, fix.heading, fix.accuracy_m) == (None,) * 5
    assert fix.queue_dropped is None
    assert decode_telemetry(encode_telemetry(fix)) == [fix]


def test_out_of_range_readings_are_clamped() -> None:
    position = Position(31.0, 121.0, speed_kmh=900.0, heading=360.0, accuracy_m=-1.0)
    status = VehicleStatus(
        locked=False, doors_open=True, engine_on=True, odometer_km=-3.0, fuel_pct=104.0
    )
    fix = build_fix(Sample(position, status), seq=0, ts=1, queue_dropped=7)
    assert (fix.speed_kmh, fix.heading, fix.accuracy_m) == (400.0, 0.0, 0.0)
    assert (fix.odometer_km, fix.fuel_pct, fix.queue_dropped) == (0.0, 100.0, 7)


def test_impossible_coordinates_become_a_status_only_fix() -> None:
    for lat, lon in [(91.0, 0.0), (0.0, 181.0), (math.nan, 0.0)]:
        fix = build_fix(Sample(Position(lat, lon, 0.0, 0.0), STATUS), seq=0, ts=1, queue_dropped=0)
        assert fix.lat is None
        assert fix.lon is None


def test_a_nan_heading_is_sent_as_unknown() -> None:
    fix = build_fix(
        Sample(Position(1.0, 2.0, 10.0, math.nan), STATUS), seq=0, ts=1, queue_dropped=0
    )
    assert fix.heading is None
    assert fix.lat == 1.0
