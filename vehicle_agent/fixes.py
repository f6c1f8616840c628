"""Turn a sensor sample into a contract fix: numbering, timestamps and sanitised values."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from protocol.telemetry import Telemetry

if TYPE_CHECKING:
    from vehicle_agent.backends.base import Position, VehicleStatus
    from vehicle_agent.reporting import Sample


def next_stamp(last_seq: int | None, last_ts: int | None, now_ms: int) -> tuple[int, int]:
    """The `seq` and `ts` of the next fix: both strictly above the last ones.

    The hub stores one fix per (vehicle, ts), so two fixes in the same millisecond, or a
    clock stepped back by NTP, must still get distinct, increasing timestamps.
    """
    seq = 0 if last_seq is None else last_seq + 1
    ts = now_ms if last_ts is None else max(now_ms, last_ts + 1)
    return seq, ts


def _finite(value: float | None, low: float, high: float) -> float | None:
    """The value clamped into [low, high]; None for a missing or non-finite reading."""
    if value is None or not math.isfinite(value):
        return None
    return min(high, max(low, value))


def _usable(position: Position | None) -> Position | None:
    """The position, unless the receiver produced coordinates no map can hold."""
    if position is None:
        return None
    lat, lon = position.lat, position.lon
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return position


def build_fix(  # noqa: PLR0913 - keyword-only: the queue's numbers that go into a fix
    sample: Sample,
    *,
    seq: int,
    ts: int,
    queue_dropped: int,
    queue_id: int | None = None,
    queue_floor: int | None = None,
) -> Telemetry:
    """The fix describing `sample`; a sample without a usable position gives a status-only fix.

    Sensor values outside the contract's ranges (a glitching bus, a GPS heading of 360.0)
    are clamped rather than allowed to stop the reporting of a car. `queue_id` and
    `queue_floor` are contract 1.1's storage acknowledgement fields (None leaves them out).
    """
    position = _usable(sample.position)
    status: VehicleStatus = sample.status
    heading = None
    if position is not None and math.isfinite(position.heading):
        heading = position.heading % 360.0
    return Telemetry(
        seq=seq,
        ts=ts,
        lat=position.lat if position else None,
        lon=position.lon if position else None,
        speed_kmh=_finite(position.speed_kmh, 0.0, 400.0) if position else None,
        heading=heading,
        odometer_km=_finite(status.odometer_km, 0.0, math.inf) or 0.0,
        fuel_pct=_finite(status.fuel_pct, 0.0, 100.0),
        battery_pct=_finite(status.battery_pct, 0.0, 100.0),
        locked=status.locked,
        doors_open=status.doors_open,
        engine_on=status.engine_on,
        alarm=status.alarm,
        accuracy_m=_finite(position.accuracy_m, 0.0, math.inf) if position else None,
        queue_dropped=queue_dropped or None,
        queue_id=queue_id,
        queue_floor=queue_floor,
    )
