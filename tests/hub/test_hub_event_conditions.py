"""Status events: raised once when a condition begins, with hysteresis, replay-safe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from db.telemetry import TelemetryRow
from hub.events.conditions import ConditionConfig, ConditionDetector, Conditions, distance_m
from hub.events.model import EventKind
from hub.geofences import SpeedLimit

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
LAT, LON = 31.2304, 121.4737


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
    now = kwargs.pop("now", T0 + timedelta(hours=1))
    return [e.kind.value for e in detector.apply_fixes(rows, now=now, **kwargs)]


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
    rows = [
        fix(0),
        fix(1, doors_open=True),
        fix(2, doors_open=True),
        fix(3),
        # Towed: 300 m away, slowly.
        fix(60, lat=LAT + 0.0027, speed_kmh=4.0),
        fix(61, lat=LAT + 0.0030, speed_kmh=4.0),
    ]
    assert kinds(detector, rows) == ["door_open_while_locked", "moving_while_locked"]
    # Unlocking re-arms it; locking again anchors the new position.
    later = [fix(100, locked=False), fix(101, lat=LAT + 0.01), fix(102, speed_kmh=30.0)]
    assert kinds(detector, later) == ["moving_while_locked"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-100.0, 100.0),  # metres east
            st.floats(-100.0, 100.0),  # metres north
            st.floats(0.0, 9.0),  # km/h: below the moving threshold
        ),
        min_size=2,
        max_size=60,
    )
)
def test_a_parked_car_jittering_by_gps_noise_never_counts_as_moving(
    jitter: list[tuple[float, float, float]],
) -> None:
    detector = ConditionDetector()
    metre = 1 / 111_320
    rows = [
        fix(i, lat=LAT + north * metre, lon=LON + east * metre, speed_kmh=speed)
        for i, (east, north, speed) in enumerate(jitter)
    ]
    anchor = rows[0]
    assert anchor.lat is not None
    assert anchor.lon is not None
    expected = any(
        row.lat is not None
        and row.lon is not None
        and distance_m(anchor.lat, anchor.lon, row.lat, row.lon) > 155.0
        for row in rows[1:]
    )
    assert ("moving_while_locked" in kinds(detector, rows)) == expected


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
    rows = [fix(i, fuel_pct=level, speed_kmh=140.0, locked=False) for i, level in enumerate(levels)]
    once = ConditionDetector(ConditionConfig(overspeed_min_s=3))
    first = kinds(once, rows)
    again = [rows[i] for i in replayed if i < len(rows)]
    assert kinds(once, again + rows) == []
    # The same fixes in any order, all in one batch, give the same events.
    shuffled = ConditionDetector(ConditionConfig(overspeed_min_s=3))
    assert kinds(shuffled, list(reversed(rows))) == first


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
