"""Status events: raised once when a condition begins, with hysteresis, replay-safe."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db.telemetry import TelemetryRow
from hub.events.conditions import ConditionConfig, ConditionDetector, Conditions
from hub.events.model import EventKind
from hub.geofences import SpeedLimit

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
LAT, LON = 31.2304, 121.4737
METRES_PER_DEGREE = 111_195.0
# A rented car: its engine may run without an event.
ON_TRIP = lambda _vehicle_id: True  # noqa: E731 - a constant predicate, named once


def fix(second: float, **changes: Any) -> TelemetryRow:
    """A parked, locked car in Shanghai `second` seconds after T0, with changes."""
    values: dict[str, Any] = {
        "vehicle_id": "car-1",
        "ts": T0 + timedelta(seconds=second),
        "seq": int(second * 10),
        "lat": LAT,
        "lon": LON,
        "speed_kmh": 0.0,
        "heading": 0.0,
        "odometer_km": 100.0,
        "fuel_pct": 60.0,
        "battery_pct": None,
        "locked": True,
        "doors_open": False,
        "engine_on": False,
        "alarm": False,
        "accuracy_m": 5.0,
        "extra": None,
    }
    values.update(changes)
    return TelemetryRow(**values)


def kinds(detector: ConditionDetector, rows: list[TelemetryRow], **kwargs: Any) -> list[str]:
    """The kinds of the events the rows raise, held first as the hub does."""
    now = kwargs.pop("now", T0 + timedelta(hours=1))
    held = detector.hold_parked(rows)
    return [e.kind.value for e in detector.apply_fixes(held, now=now, **kwargs)]


def metres_north(metres: float) -> float:
    """The latitude `metres` north of the parked car."""
    return LAT + metres / METRES_PER_DEGREE


def towed(
    start: float, *, every_s: float = 5.0, speed_kmh: float = 30.0, count: int = 12
) -> list[TelemetryRow]:
    """A locked car, engine off, pulled north from where it stood at `start`."""
    step_m = speed_kmh / 3.6 * every_s
    return [
        fix(start + i * every_s, lat=metres_north(i * step_m), speed_kmh=speed_kmh)
        for i in range(1, count + 1)
    ]


def test_low_fuel_is_raised_once_and_rearmed_only_well_above_the_threshold() -> None:
    detector = ConditionDetector()
    levels = [20, 14, 13, 15.5, 14, 18, 19.9, 12, 25, 10]
    rows = [fix(i, fuel_pct=level) for i, level in enumerate(levels)]
    # Raised at 14; 15.5 .. 19.9 is inside the hysteresis band; re-armed at 25, raised at 10.
    assert kinds(detector, rows) == ["low_fuel", "low_fuel"]


def test_low_battery_for_electric_cars() -> None:
    detector = ConditionDetector()
    rows = [fix(i, fuel_pct=None, battery_pct=level) for i, level in enumerate([30, 14, 9])]
    assert kinds(detector, rows) == ["low_battery"]


def test_overspeed_needs_the_minimum_duration_and_ends_below_the_hysteresis() -> None:
    detector = ConditionDetector(ConditionConfig(default_speed_limit_kmh=100, overspeed_min_s=10))
    unlocked = {"locked": False, "engine_on": True}
    short = [fix(s, speed_kmh=120, **unlocked) for s in range(8)]
    back = [fix(8, speed_kmh=80, **unlocked)]
    long = [fix(s, speed_kmh=120 + s, **unlocked) for s in range(9, 25)]
    hovering = [fix(25 + s, speed_kmh=97 + (s % 2) * 5, **unlocked) for s in range(20)]
    events = detector.apply_fixes(short + back + long + hovering, now=T0, on_trip=lambda _vid: True)
    assert [e.kind for e in events] == [EventKind.OVERSPEED]
    assert events[0].ts == T0 + timedelta(seconds=19)
    assert events[0].details["limit_kmh"] == 100
    assert events[0].details["max_speed_kmh"] == 139


def test_a_fence_speed_limit_replaces_the_default_and_owns_the_event() -> None:
    detector = ConditionDetector(ConditionConfig(overspeed_min_s=0))
    rows = [fix(s, speed_kmh=45, locked=False) for s in range(3)]
    events = detector.apply_fixes(rows, now=T0, speed_limit=lambda _row: SpeedLimit(30.0, 7))
    assert [(e.kind, e.geofence_id) for e in events] == [(EventKind.OVERSPEED, 7)]
    # The default limit's overspeed belongs to no fence (per-fence rules do not match it).
    fast = [fix(s, speed_kmh=150, locked=False, vehicle_id="car-2") for s in range(3)]
    (default,) = detector.apply_fixes(fast, now=T0)
    assert (default.kind, default.geofence_id) == (EventKind.OVERSPEED, None)


def test_door_open_while_locked_and_moving_while_locked() -> None:
    detector = ConditionDetector()
    rows = [fix(0), fix(1, doors_open=True), fix(2, doors_open=True), fix(3)]
    assert kinds(detector, rows) == ["door_open_while_locked"]
    # Towed at 30 km/h, a fix every 5 s: 160 m (150 m plus both fixes' 5 m) is passed by the
    # fourth fix, and the move is proved two fixes (10 s) later, 250 m away.
    tow = towed(60)
    events = detector.apply_fixes(detector.hold_parked(tow), now=T0 + timedelta(hours=1))
    assert [(e.kind.value, e.ts) for e in events] == [("moving_while_locked", tow[5].ts)]
    assert events[0].lat == tow[5].lat  # where the car is, not where it was parked
    assert events[0].details["moved_m"] == pytest.approx(250.0, abs=0.5)
    assert events[0].details["fixes"] == 3
    assert events[0].details["away_s"] == 10.0
    # Once: the alarm is re-armed by unlocking, not by moving on.
    assert kinds(detector, towed(130, count=5)) == []


def test_unlocking_rearms_it_for_the_next_time_the_car_is_parked_and_moved() -> None:
    detector = ConditionDetector()
    assert kinds(detector, [fix(0), *towed(10)]) == ["moving_while_locked"]
    dropped = metres_north(12 * 30 / 3.6 * 5)
    # Left where the tow ended: unlocked by staff, locked, and standing for two minutes.
    standing = [fix(80, lat=dropped, locked=False)] + [
        fix(90 + 10 * i, lat=dropped) for i in range(14)
    ]
    assert kinds(detector, standing) == []
    again = [
        fix(240 + i * 5, lat=dropped + (i + 1) * 41.7 / METRES_PER_DEGREE, speed_kmh=30.0)
        for i in range(12)
    ]
    assert kinds(detector, again) == ["moving_while_locked"]


def test_the_gps_speed_of_a_parked_car_is_no_evidence_that_it_moves() -> None:
    detector = ConditionDetector()
    # A receiver in a garage: 65 km/h, then 120, standing still; the engine is off.
    rows = [fix(i, speed_kmh=(65.0, 120.0, 12.0)[i % 3]) for i in range(120)]
    assert kinds(detector, rows) == []
    # Stored at the held point, standing: no overspeed either, and the speed kept aside.
    held = ConditionDetector().hold_parked(rows)
    assert {(r.lat, r.lon, r.speed_kmh) for r in held} == {(LAT, LON, 0.0)}
    assert held[1].extra == {
        "_hub": {
            "raw": {"lat": LAT, "lon": LON, "speed_kmh": 120.0, "heading": 0.0, "accuracy_m": 5.0}
        }
    }


def test_a_car_moved_while_unlocked_raises_nothing_and_is_no_longer_held() -> None:
    detector = ConditionDetector()
    rows = [fix(0, locked=False), *(row._replace(locked=False) for row in towed(10))]
    held = detector.hold_parked(rows)
    assert detector.apply_fixes(held, now=T0) == []
    assert [r.lat for r in held[-6:]] == [r.lat for r in rows[-6:]]  # as received after the move
    assert {r.lat for r in held[:5]} == {LAT}  # held until then


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 1.0),  # how far off, as a share of the fix's accuracy
            st.floats(0.0, 360.0),  # in which direction
            st.floats(3.0, 250.0),  # the fix's stated accuracy, m
            st.floats(0.0, 400.0),  # km/h: anything a receiver may say
            st.floats(0.5, 90.0),  # seconds since the fix before
        ),
        min_size=2,
        max_size=80,
    )
)
def test_a_parked_car_wandering_within_its_accuracy_never_counts_as_moving(
    wander: list[tuple[float, float, float, float, float]],
) -> None:
    detector = ConditionDetector()
    rows, second = [], 0.0
    for share, bearing, accuracy, speed, gap in wander:
        second += gap
        off = share * accuracy
        north = off * math.cos(math.radians(bearing))
        east = off * math.sin(math.radians(bearing))
        rows.append(
            fix(
                second,
                lat=metres_north(north),
                lon=LON + east / (METRES_PER_DEGREE * math.cos(math.radians(LAT))),
                accuracy_m=accuracy,
                speed_kmh=speed,
            )
        )
    assert kinds(detector, rows) == []


def test_engine_on_without_trip_and_idle() -> None:
    detector = ConditionDetector(ConditionConfig(idle_after_s=60))
    running = {"locked": False, "engine_on": True}
    rows = [fix(s, **running) for s in range(0, 120, 10)]
    assert kinds(detector, rows) == ["engine_on_without_trip", "idle"]
    detector = ConditionDetector(ConditionConfig(idle_after_s=60))
    assert kinds(detector, rows, on_trip=lambda _vid: True) == ["idle"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 100), min_size=1, max_size=40),
    st.lists(st.integers(0, 39), max_size=20),
)
def test_replays_and_redeliveries_raise_nothing_twice(
    levels: list[float], replayed: list[int]
) -> None:
    driving = {"speed_kmh": 140.0, "locked": False, "engine_on": True}
    rows = [fix(i, fuel_pct=level, **driving) for i, level in enumerate(levels)]
    once = ConditionDetector(ConditionConfig(overspeed_min_s=3))
    first = kinds(once, rows)
    again = [rows[i] for i in replayed if i < len(rows)]
    assert kinds(once, again + rows) == []
    # The same fixes in any order, all in one batch, give the same events.
    shuffled = ConditionDetector(ConditionConfig(overspeed_min_s=3))
    assert kinds(shuffled, list(reversed(rows))) == first


def test_a_tow_replayed_or_reordered_raises_the_alarm_once() -> None:
    rows = [fix(0), *towed(10)]
    once = ConditionDetector()
    assert kinds(once, rows) == ["moving_while_locked"]
    assert kinds(once, rows[3:] + rows) == []
    shuffled = ConditionDetector()
    assert kinds(shuffled, list(reversed(rows))) == ["moving_while_locked"]


def test_state_survives_a_restart_through_its_json() -> None:
    detector = ConditionDetector()
    assert kinds(detector, [fix(0, fuel_pct=10)]) == ["low_fuel"]
    saved = {vid: record.to_json() for vid, record in detector.take_dirty().items()}
    restarted = ConditionDetector()
    restarted.load({vid: Conditions.from_json(data) for vid, data in saved.items()})
    assert kinds(restarted, [fix(1, fuel_pct=9)]) == []
    assert kinds(restarted, [fix(0.5, fuel_pct=9)]) == []  # older than the state: ignored


def test_old_fixes_store_events_without_notifying() -> None:
    detector = ConditionDetector()
    events = detector.apply_fixes(
        [fix(0, fuel_pct=10), fix(600, doors_open=True)], now=T0 + timedelta(seconds=700)
    )
    assert [(e.kind.value, e.notify) for e in events] == [
        ("low_fuel", False),
        ("door_open_while_locked", True),
    ]


def test_presence_changes_raise_online_and_offline_but_not_on_first_sight() -> None:
    detector = ConditionDetector()
    now = datetime.now(UTC)
    assert detector.apply_presence("car-1", online=True, at=now) is None
    assert detector.apply_presence("car-1", online=True, at=now) is None
    offline = detector.apply_presence("car-1", online=False, at=now)
    assert offline is not None
    assert offline.kind is EventKind.OFFLINE
    online = detector.apply_presence("car-1", online=True, at=now)
    assert online is not None
    assert online.kind is EventKind.ONLINE


def test_a_fix_from_a_fast_clock_does_not_hold_the_conditions() -> None:
    """Conditions follow the unit's counter, like the state (hub/ordering.py).

    A fix stamped four minutes ahead (the future filter lets up to five through) used to
    make every real fix of those four minutes "older", so none of them was judged.
    """
    detector = ConditionDetector()
    assert kinds(detector, [fix(0, seq=1)]) == []
    ahead = fix(240, seq=2, engine_on=True, locked=False)
    assert kinds(detector, [ahead], on_trip=ON_TRIP) == []
    # The real clock goes on: later fixes by the counter, earlier by the clock.
    later = [fix(10 + i, seq=3 + i, engine_on=True, locked=False, fuel_pct=8.0) for i in range(3)]
    assert kinds(detector, later, on_trip=ON_TRIP) == ["low_fuel"]


def test_a_restarted_counter_is_followed_once_its_clock_is_past_the_allowance() -> None:
    detector = ConditionDetector(ConditionConfig(future_allowance_s=300))
    assert kinds(detector, [fix(0, seq=5000, engine_on=True, locked=False)], on_trip=ON_TRIP) == []
    # A lower seq not far enough ahead in time: older news, not judged.
    late = fix(60, seq=1, engine_on=True, locked=False, fuel_pct=8.0)
    assert kinds(detector, [late], on_trip=ON_TRIP) == []
    # Later than the newest by more than the allowance: a new counter, judged.
    restarted = fix(400, seq=2, engine_on=True, locked=False, fuel_pct=8.0)
    assert kinds(detector, [restarted], on_trip=ON_TRIP) == ["low_fuel"]
