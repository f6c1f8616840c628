"""gpsd's JSON reports read into fixes: pure functions, no I/O.

gpsd answers a `?WATCH` with one JSON object per line. Only TPV ("time, position,
velocity") reports matter here; every other class (VERSION, DEVICES, SKY...) is ignored.
A TPV either carries a usable fix or says there is none, and the reader keeps whatever the
latest TPV said, so a receiver that loses the sky stops being reported at once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final

# gpsd's TPV `mode`: 0 unknown, 1 no fix, 2 two-dimensional fix, 3 three-dimensional fix.
# A 2D fix (no altitude) places a car on the map as well as a 3D one.
MIN_USABLE_MODE: Final = 2
# gpsd reports speed in metres per second; the contract speaks km/h.
MPS_TO_KMH: Final = 3.6
# The contract's range for speed_kmh: anything faster is a receiver glitch, not a car.
MAX_SPEED_KMH: Final = 400.0


@dataclass(frozen=True, slots=True)
class GpsdFix:
    """A usable fix from one TPV report; `heading` is None when gpsd gave no track."""

    lat: float
    lon: float
    speed_kmh: float
    heading: float | None
    accuracy_m: float | None


@dataclass(frozen=True, slots=True)
class TpvReport:
    """What one TPV report says: the device it came from and its fix, or None for no fix."""

    device: str | None
    fix: GpsdFix | None


def parse_report(line: bytes | str) -> TpvReport | None:
    """Read one line of gpsd output: a TPV becomes a TpvReport, anything else None."""
    try:
        report = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or absurdly nested
        return None
    if not isinstance(report, dict) or report.get("class") != "TPV":
        return None
    device = report.get("device")
    return TpvReport(device=device if isinstance(device, str) else None, fix=_fix(report))


def _fix(report: dict[str, object]) -> GpsdFix | None:
    mode = report.get("mode")
    if not isinstance(mode, int) or isinstance(mode, bool) or mode < MIN_USABLE_MODE:
        return None
    lat = _number(report.get("lat"))
    lon = _number(report.get("lon"))
    speed_mps = _number(report.get("speed"))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    # Without a speed the agent could not tell a parked car from a moving one, and it refuses
    # some commands while moving: such a fix is not usable. gpsd sends one right after
    # start-up, before an RMC sentence has supplied the date, then speed with every cycle.
    if speed_mps is None or speed_mps < 0 or speed_mps * MPS_TO_KMH > MAX_SPEED_KMH:
        return None
    track = _number(report.get("track"))
    heading = track if track is not None and 0 <= track <= 360 else None
    return GpsdFix(
        lat=lat,
        lon=lon,
        speed_kmh=speed_mps * MPS_TO_KMH,
        heading=heading,
        accuracy_m=_horizontal_error(report),
    )


def _horizontal_error(report: dict[str, object]) -> float | None:
    """The estimated horizontal error (95 % confidence) in metres, if gpsd gave one."""
    eph = _non_negative(report.get("eph"))
    if eph is not None:
        return eph
    # Older gpsd releases give only the per-axis errors: combine them as a circle's radius.
    epx = _non_negative(report.get("epx"))
    epy = _non_negative(report.get("epy"))
    if epx is not None and epy is not None:
        return math.hypot(epx, epy)
    return epx if epx is not None else epy


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def _non_negative(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and number >= 0 else None
