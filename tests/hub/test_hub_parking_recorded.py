"""Recorded wander of real receivers through the parking rules, the conditions and the fences.

The recordings (tests/hub/data/gpsd) are gpsd's reports of receivers that stood still; here
they become the fixes of a locked car with its engine off, sampled as agents do (every
report, or one every few), and looped as if the car stood for hours. In-process, no services:
tests/hub/test_hub_parking_gpsd.py replays the same recordings through gpsd, an agent and a
hub.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import pytest
from geofence_testing import circle
from gps_recordings import RECORDINGS, WANDER, Reading, fixes

from db.geofences.model import GeofenceState
from db.telemetry import TelemetryRow
from hub import parking
from hub.events.conditions import ConditionDetector
from hub.geofences import GeofenceEngine

if TYPE_CHECKING:
    from collections.abc import Sequence

T0: Final = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
CAR: Final = "car-1"
# (reports between two fixes, seconds between two fixes): every report a second apart (the
# most evidence), one a second, and the agent's 5 s moving and 60 s parked intervals.
SAMPLINGS: Final = ((1, 1.0), (4, 1.0), (5, 5.0), (20, 60.0))
# The car stands for this many passes over its recording.
LOOPS: Final = 20
# The e2e test's zone: a 45 m circle about a point 30 m west and 15 m south of the first fix,
# with the default 10 m margins; the recording's wander falls on both sides of its edge.
ZONE_RADIUS_M: Final = 45.0
ZONE_OFFSET_M: Final = (-30.0, -15.0)
MARGIN_M: Final = 10.0
BATCH: Final = 50
METRES_PER_DEGREE: Final = 111_195.0


def rows_of(readings: Sequence[Reading], *, stride: int, every_s: float) -> list[TelemetryRow]:
    """The recording looped LOOPS times, one fix every `stride` reports, `every_s` apart."""
    picked = [r.fix for r in readings][::stride]
    rows = []
    for number, fix in enumerate(picked * LOOPS):
        rows.append(
            TelemetryRow(
                CAR,
                T0 + timedelta(seconds=number * every_s),
                number,
                fix.lat,
                fix.lon,
                fix.speed_kmh,
                fix.heading,
                1000.0,
                50.0,
                None,
                True,  # locked
                False,
                False,  # engine off
                None,
                fix.accuracy_m,
                None,
            )
        )
    return rows


def judge(
    rows: list[TelemetryRow], detector: ConditionDetector | None = None
) -> tuple[list[TelemetryRow], list[str]]:
    """Rows as the hub stores them, and the events they raise, batch by batch."""
    detector = detector or ConditionDetector()
    stored: list[TelemetryRow] = []
    kinds: list[str] = []
    for start in range(0, len(rows), BATCH):
        held = detector.hold_parked(rows[start : start + BATCH])
        kinds += [e.kind.value for e in detector.apply_fixes(held, now=T0)]
        stored += held
    return stored, kinds


@pytest.mark.parametrize("name", RECORDINGS)
@pytest.mark.parametrize(("stride", "every_s"), SAMPLINGS)
def test_recorded_wander_raises_nothing_and_is_stored_at_the_parked_point(
    name: str, stride: int, every_s: float
) -> None:
    readings = fixes(name)
    rows = rows_of(readings, stride=stride, every_s=every_s)
    stored, kinds = judge(rows)
    assert kinds == []
    first = rows[0]
    assert {(r.lat, r.lon, r.speed_kmh) for r in stored} == {(first.lat, first.lon, 0.0)}
    # What the receiver said is kept, fix by fix.
    assert [parking.received(r) for r in stored] == rows


def test_the_recordings_are_the_wander_the_issue_describes() -> None:
    """The data is worth testing with: fast, and (for one) far, while standing still."""
    speeds = {name: max(r.fix.speed_kmh for r in fixes(name)) for name in RECORDINGS}
    assert all(speed >= 40.0 for speed in speeds.values()), speeds
    wander = fixes(WANDER)
    first = wander[0].fix
    farthest = max(parking.distance_m(first.lat, first.lon, r.fix.lat, r.fix.lon) for r in wander)
    assert farthest > 200.0


def _zone_and_engine() -> GeofenceEngine:
    first = fixes(WANDER)[0].fix
    east, north = ZONE_OFFSET_M
    zone = circle(
        7,
        ZONE_RADIUS_M,
        east_m=east,
        north_m=north,
        lat0=first.lat,
        lon0=first.lon,
        enter_margin_m=MARGIN_M,
        exit_margin_m=MARGIN_M,
    )
    engine = GeofenceEngine([zone])
    before = T0 - timedelta(hours=1)
    # Parked in the zone before the recording starts.
    engine.load_state([GeofenceState(CAR, 7, True, before, None, before, first.lat, first.lon)], [])
    return engine


@pytest.mark.parametrize(("stride", "every_s"), SAMPLINGS[:3])
def test_recorded_wander_across_a_zone_edge_flaps_it_unless_held(
    stride: int, every_s: float
) -> None:
    rows = rows_of(fixes(WANDER), stride=stride, every_s=every_s)
    raw = _zone_and_engine()
    flaps = [
        t for start in range(0, len(rows), BATCH) for t in raw.evaluate(rows[start : start + BATCH])
    ]
    assert len(flaps) >= 2  # out of its zone and back in, as the issue saw
    stored, _ = judge(rows)
    held = _zone_and_engine()
    assert [
        t
        for start in range(0, len(stored), BATCH)
        for t in held.evaluate(stored[start : start + BATCH])
    ] == []


@pytest.mark.parametrize("name", RECORDINGS)
def test_a_car_towed_after_its_recorded_wander_is_still_caught(name: str) -> None:
    rows = rows_of(fixes(name), stride=1, every_s=1.0)
    detector = ConditionDetector()
    assert judge(rows, detector)[1] == []
    state = detector.record(CAR).parking
    assert state is not None
    # Never wider than the anchor said, and narrowed by the wander's better fixes: to 57 m
    # where the first fix said 401 m (haicom-305N).
    assert state.error_m <= min(rows[0].accuracy_m or 15.0, 60.0)
    # Towed north at 30 km/h from where it stood, a fix every 5 s, 10 m accurate.
    step_m, end = 30 / 3.6 * 5, rows[-1].ts
    tow = [
        rows[0]._replace(
            ts=end + timedelta(seconds=5 * i),
            seq=len(rows) + i,
            lat=state.lat + step_m * i / METRES_PER_DEGREE,
            speed_kmh=30.0,
            accuracy_m=10.0,
        )
        for i in range(1, 30)
    ]
    stored, kinds = judge(tow, detector)
    assert kinds == ["moving_while_locked"]
    [moved] = [r for r in stored if parking.move_mark(r) is not None]
    # The third fix beyond the radius, 10 s after the first.
    radius = 150.0 + state.error_m + 10.0
    first_away = next(i for i in range(1, 30) if step_m * i > radius)
    assert moved.ts == tow[first_away - 1 + 2].ts
    assert parking.move_mark(moved) == {
        "moved_m": pytest.approx(step_m * (first_away + 2), abs=0.5),
        "away_s": 10.0,
        "fixes": 3,
    }
