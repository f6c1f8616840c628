"""The fix filters: pure logic, driven with explicit clocks."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.filters import Decision, FilterConfig, FixFilter, Reason, distance_m
from hub.ordering import is_newer
from protocol.telemetry import Telemetry

NOW = 1_750_000_000_000
MINUTE = 60_000
CAR = "car-1"


def fix(
    ts: int, lat: float | None = 31.2304, lon: float | None = 121.4737, **changes: Any
) -> Telemetry:
    fields: dict[str, Any] = {
        "seq": ts % 1000,
        "ts": ts,
        "lat": lat,
        "lon": lon,
        "speed_kmh": None if lat is None else 30.0,
        "heading": None,
        "odometer_km": 10.0,
        "fuel_pct": 50.0,
        "locked": False,
        "doors_open": False,
        "engine_on": True,
        "accuracy_m": 5.0,
    }
    fields.update(changes)
    return Telemetry(**fields)


def test_distance_is_about_right_and_wraps_the_antimeridian() -> None:
    # One degree of latitude is about 111.2 km.
    assert abs(distance_m(0.0, 0.0, 1.0, 0.0) - 111_195) < 100
    # 10 km east in Shanghai, within 0.1 %.
    east = 10_000 / (111_195 * math.cos(math.radians(31.23)))
    assert abs(distance_m(31.23, 121.47, 31.23, 121.47 + east) - 10_000) < 10
    # Across the antimeridian the short way: 0.2 degrees, not 359.8.
    assert distance_m(0.0, 179.9, 0.0, -179.9) < 23_000


def test_a_repeated_timestamp_is_a_duplicate() -> None:
    f = FixFilter()
    assert f.check(CAR, fix(NOW), NOW).keep
    again = f.check(CAR, fix(NOW), NOW)
    assert again == Decision(keep=False, reason=Reason.DUPLICATE)
    # Another vehicle may share the timestamp.
    assert f.check("car-2", fix(NOW), NOW).keep


def test_future_fixes_are_dropped_unless_they_change_the_status() -> None:
    f = FixFilter()
    assert f.check(CAR, fix(NOW - 1000), NOW).keep
    ahead = NOW + 6 * MINUTE
    assert f.check(CAR, fix(ahead), NOW).reason is Reason.FUTURE
    assert not f.check(CAR, fix(ahead + 1), NOW).keep
    # Within the allowance: an ordinary fix.
    assert f.check(CAR, fix(NOW + 4 * MINUTE), NOW).keep

    locked = f.check(CAR, fix(ahead + 2, lat=40.0, lon=116.0, locked=True), NOW)
    assert locked.keep
    assert locked.reason is Reason.FUTURE
    # Kept at the hub's clock and at the last known position, not the fix's own.
    assert locked.ts == NOW
    assert not locked.own_position
    assert (locked.lat, locked.lon) == (31.2304, 121.4737)
    # A redelivery of the same message is a duplicate.
    assert f.check(CAR, fix(ahead + 2, locked=True), NOW).reason is Reason.DUPLICATE


def test_old_fixes_are_dropped_unless_they_change_the_status() -> None:
    config = FilterConfig(max_age_ms=60 * MINUTE)
    f = FixFilter(config)
    assert f.check(CAR, fix(NOW), NOW).keep
    old = NOW - 61 * MINUTE
    assert f.check(CAR, fix(old), NOW) == Decision(keep=False, reason=Reason.TOO_OLD)
    kept = f.check(CAR, fix(old + 1, doors_open=True), NOW)
    assert kept.keep
    assert kept.reason is Reason.TOO_OLD
    assert kept.own_position
    assert kept.ts == old + 1


def test_null_island_is_an_invalid_position() -> None:
    f = FixFilter()
    assert f.check(CAR, fix(NOW), NOW).keep
    assert f.check(CAR, fix(NOW + 1000, lat=0.0, lon=0.0), NOW).reason is Reason.INVALID_POSITION
    assert not f.check(CAR, fix(NOW + 2000, lat=0.0, lon=0.0), NOW).keep
    unlocked = f.check(CAR, fix(NOW + 3000, lat=0.0, lon=0.0, engine_on=False), NOW)
    assert unlocked.keep
    assert unlocked.reason is Reason.INVALID_POSITION
    assert (unlocked.lat, unlocked.lon) == (31.2304, 121.4737)
    assert unlocked.position_ts == NOW


def test_an_impossible_jump_is_refused_until_a_second_fix_confirms_it() -> None:
    f = FixFilter()
    assert f.check(CAR, fix(NOW), NOW).keep
    # Beijing one second later: thousands of km/h.
    assert f.check(CAR, fix(NOW + 1000, lat=39.9, lon=116.4), NOW).reason is Reason.IMPOSSIBLE_JUMP
    # Back near Shanghai, consistent with the anchor: accepted, the jump stays refused.
    assert f.check(CAR, fix(NOW + 2000, lat=31.2305, lon=121.4737), NOW).keep
    # A jump confirmed by the next fix means the anchor was the glitch: re-anchor.
    assert f.check(CAR, fix(NOW + 3000, lat=39.9, lon=116.4), NOW).reason is Reason.IMPOSSIBLE_JUMP
    confirmed = f.check(CAR, fix(NOW + 4000, lat=39.9001, lon=116.4), NOW)
    assert confirmed.keep
    assert confirmed.own_position
    track = f.track(CAR)
    assert track is not None
    assert track.position is not None
    assert track.position.lat == 39.9001


def test_the_jump_check_allows_for_accuracy() -> None:
    f = FixFilter()
    assert f.check(CAR, fix(NOW, accuracy_m=30.0), NOW).keep
    # 50 m in 100 ms is 1800 km/h, but both fixes are only good to 30 m: within the noise.
    north = 50 / 111_195
    noisy = fix(NOW + 100, lat=31.2304 + north, accuracy_m=30.0)
    assert f.check(CAR, noisy, NOW).own_position
    precise = FixFilter()
    assert precise.check(CAR, fix(NOW, accuracy_m=1.0), NOW).keep
    sharp = fix(NOW + 100, lat=31.2304 + north, accuracy_m=1.0)
    assert precise.check(CAR, sharp, NOW).reason is Reason.IMPOSSIBLE_JUMP


def test_status_only_fixes_are_kept_at_the_last_known_position() -> None:
    f = FixFilter()
    first = f.check(CAR, fix(NOW, lat=None, lon=None), NOW)
    assert first.keep
    assert (first.lat, first.lon, first.position_ts) == (None, None, None)
    assert f.check(CAR, fix(NOW + 1000), NOW).own_position
    # Even with nothing changed: it still carries fuel, odometer...
    later = f.check(CAR, fix(NOW + 2000, lat=None, lon=None), NOW)
    assert later.keep
    assert later.reason is None
    assert not later.own_position
    assert (later.lat, later.lon, later.position_ts) == (31.2304, 121.4737, NOW + 1000)


def test_seeded_state_is_the_starting_point() -> None:
    f = FixFilter()
    f.seed(CAR, ts=NOW, seq=None, status=(True, False, False, None), lat=31.0, lon=121.0)
    # Same status, 100 km away a second later: a jump.
    assert f.check(CAR, fix(NOW + 1000, locked=True, engine_on=False), NOW).reason is (
        Reason.IMPOSSIBLE_JUMP
    )
    # An unlock from somewhere else again is kept, at the seeded position.
    unlock = f.check(CAR, fix(NOW + 2000, lat=39.9, lon=116.4, locked=False), NOW)
    assert unlock.keep
    assert (unlock.lat, unlock.lon) == (31.0, 121.0)


def test_an_omitted_alarm_is_not_a_change() -> None:
    f = FixFilter()
    assert f.check(CAR, fix(NOW, alarm=True), NOW).keep
    # alarm omitted: unknown, not "off"; the (0,0) fix is dropped as nothing changed.
    assert not f.check(CAR, fix(NOW + 1000, lat=0.0, lon=0.0), NOW).keep
    assert f.check(CAR, fix(NOW + 2000, lat=0.0, lon=0.0, alarm=False), NOW).keep


# --- properties --------------------------------------------------------------------------

status_changes = st.fixed_dictionaries(
    {
        "locked": st.booleans(),
        "doors_open": st.booleans(),
        "engine_on": st.booleans(),
        "alarm": st.none() | st.booleans(),
    }
)
positions = st.one_of(
    st.just((None, None)),
    st.just((0.0, 0.0)),
    st.tuples(st.floats(31.0, 31.5, allow_nan=False), st.floats(121.0, 121.5, allow_nan=False)),
    st.tuples(st.floats(-90, 90, allow_nan=False), st.floats(-180, 180, allow_nan=False)),
)
fix_streams = st.lists(
    st.tuples(
        # Mostly forward in time, sometimes back, sometimes far ahead or behind.
        st.integers(-40 * 86_400_000, 10 * MINUTE),
        positions,
        status_changes,
        st.none() | st.floats(0, 100, allow_nan=False),
    ),
    min_size=1,
    max_size=40,
)


@settings(deadline=None, max_examples=300)
@given(stream=fix_streams)
def test_nothing_that_changes_the_status_is_ever_dropped(
    stream: list[tuple[int, tuple[float | None, float | None], dict[str, Any], float | None]],
) -> None:
    f = FixFilter()
    accepted_at: set[int] = set()
    for offset, (lat, lon), status, accuracy in stream:
        ts = NOW + offset
        track = f.track(CAR)
        known = track.status if track is not None else None
        candidate = fix(ts, lat=lat, lon=lon, accuracy_m=accuracy, **status)
        decision = f.check(CAR, candidate, NOW)
        new_status = (status["locked"], status["doors_open"], status["engine_on"])
        changes = (
            known is None
            or new_status != known[:3]
            or (status["alarm"] is not None and status["alarm"] != known[3])
        )
        if not decision.keep:
            # Only a repeat of a fix already seen, or a fix that changes nothing, is dropped.
            assert decision.reason is not None
            assert decision.reason is Reason.DUPLICATE or not changes
            assert decision.reason is not Reason.DUPLICATE or ts in accepted_at
            continue
        accepted_at.add(ts)
        # Never stored in the future, never at null island, lat/lon always paired.
        assert decision.ts <= NOW + f.config.max_future_ms
        assert (decision.lat is None) == (decision.lon is None)
        assert not (decision.own_position and decision.lat == 0 and decision.lon == 0)
        if decision.own_position:
            assert (decision.lat, decision.lon) == (lat, lon)
        if lat is None:
            # A status-only fix is never dropped.
            assert decision.reason in {None, Reason.TOO_OLD, Reason.FUTURE}


@settings(deadline=None, max_examples=200)
@given(stream=fix_streams)
def test_the_newest_time_and_status_only_move_forward(
    stream: list[tuple[int, tuple[float | None, float | None], dict[str, Any], float | None]],
) -> None:
    f = FixFilter()
    newest: tuple[int, int] | None = None
    for offset, (lat, lon), status, accuracy in stream:
        candidate = fix(NOW + offset, lat=lat, lon=lon, accuracy_m=accuracy, **status)
        decision = f.check(CAR, candidate, NOW)
        # The track follows the newest kept fix by the ordering rule (seq, then clock).
        moves = decision.keep and (
            newest is None
            or is_newer(
                candidate.seq,
                decision.ts,
                than_seq=newest[0],
                than_ts=newest[1],
                allowance=f.config.max_future_ms,
            )
        )
        assert decision.newest == moves
        if moves:
            newest = (candidate.seq, decision.ts)
        track = f.track(CAR)
        assert track is not None
        assert newest is None or (track.last_seq, track.last_ts) == newest
