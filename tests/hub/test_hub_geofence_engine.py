"""The geofence engine's rules, one at a time: margins, accuracy, dwell, crossing, schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from geofence_testing import LAT0, LON0, T0, Fix, at, circle, corridor, fix, lonlat, square

from db.geofences import Geofence, GeofenceKind, GeofenceState, Schedule, VehiclePosition
from db.telemetry import TelemetryRow
from hub.geofences import Cause, FenceIndex, GeofenceEngine, GeofenceTransition, TransitionKind

ENTER, EXIT = TransitionKind.ENTER, TransitionKind.EXIT


def kinds(transitions: list[GeofenceTransition]) -> list[tuple[int, TransitionKind]]:
    return [(t.geofence_id, t.kind) for t in transitions]


def run(engine: GeofenceEngine, fixes: list[Fix]) -> list[GeofenceTransition]:
    """Evaluate fixes one batch each, as a slow trickle of batches would."""
    out: list[GeofenceTransition] = []
    for one in fixes:
        out += engine.evaluate([one])
    return out


# --- margins and accuracy ------------------------------------------------------------------------


def test_enter_needs_the_enter_margin_and_exit_the_exit_margin() -> None:
    engine = GeofenceEngine([square(1, 100, enter_margin_m=10, exit_margin_m=20)])
    # The east edge is at x = 100 m.
    assert engine.evaluate([fix(95, 0, 0)]) == []  # inside by 5 m: not yet
    entered = engine.evaluate([fix(89, 0, 1)])  # inside by 11 m
    assert kinds(entered) == [(1, ENTER)]
    assert entered[0].cause is Cause.MARGIN
    assert entered[0].ts == T0 + timedelta(seconds=1)
    assert (entered[0].lat, entered[0].lon) == pytest.approx(at(89, 0))
    assert entered[0].fence_kind is GeofenceKind.PARKING_ZONE
    assert engine.evaluate([fix(110, 0, 2)]) == []  # outside by 10 m: still inside
    assert kinds(engine.evaluate([fix(121, 0, 3)])) == [(1, EXIT)]


def test_accuracy_adds_to_both_margins() -> None:
    engine = GeofenceEngine([square(1, 100, enter_margin_m=10, exit_margin_m=10)])
    # 30 m inside, but only good to 25 m: 30 < 10 + 25.
    assert engine.evaluate([fix(70, 0, 0, accuracy_m=25)]) == []
    assert kinds(engine.evaluate([fix(70, 0, 1, accuracy_m=15)])) == [(1, ENTER)]
    assert engine.evaluate([fix(130, 0, 2, accuracy_m=25)]) == []  # 30 < 10 + 25
    assert kinds(engine.evaluate([fix(130, 0, 3, accuracy_m=5)])) == [(1, EXIT)]


def test_a_fix_without_accuracy_counts_the_default() -> None:
    engine = GeofenceEngine([square(1, 100, enter_margin_m=10)], default_accuracy_m=15)
    assert engine.evaluate([fix(80, 0, 0, accuracy_m=None)]) == []  # 20 < 10 + 15
    assert kinds(engine.evaluate([fix(70, 0, 1, accuracy_m=None)])) == [(1, ENTER)]


def test_zero_margins_count_the_boundary_as_inside() -> None:
    engine = GeofenceEngine([circle(1, 100)])
    assert kinds(engine.evaluate([fix(99.5, 0, 0)])) == [(1, ENTER)]
    assert engine.evaluate([fix(99.9, 0, 1)]) == []
    assert kinds(engine.evaluate([fix(100.5, 0, 2)])) == [(1, EXIT)]


def test_a_fix_far_from_every_fence_exits_the_one_it_was_in() -> None:
    # Far enough that the index does not even return the fence for the second fix.
    engine = GeofenceEngine([circle(1, 100, enter_margin_m=10, exit_margin_m=10)])
    assert kinds(engine.evaluate([fix(0, 0, 0)])) == [(1, ENTER)]
    assert kinds(engine.evaluate([fix(5_000, 0, 1000)])) == [(1, EXIT)]


def test_telemetry_rows_are_fixes_and_status_only_rows_are_skipped() -> None:
    engine = GeofenceEngine([circle(1, 100)])
    lat, lon = at(0, 0)
    row = TelemetryRow(
        "car-1", T0, 1, lat, lon, 30.0, None, None, None, None, False, False, True, None, 3.0, None
    )
    blind = row._replace(ts=T0 + timedelta(seconds=1), lat=None, lon=None)
    assert kinds(engine.evaluate([row, blind])) == [(1, ENTER)]
    assert engine.stats.without_position == 1


# --- shapes in metres ----------------------------------------------------------------------------


@pytest.mark.parametrize("lat0", [LAT0, 60.0])
@pytest.mark.parametrize("bearing", ["north", "east", "south", "west", "north-east"])
def test_a_circle_is_its_radius_in_metres_everywhere(lat0: float, bearing: str) -> None:
    unit = {
        "north": (0, 1), "east": (1, 0), "south": (0, -1), "west": (-1, 0),
        "north-east": (0.7071067811865476, 0.7071067811865476),
    }[bearing]  # fmt: skip
    radius = 300.0
    for distance, inside in ((radius - 0.5, True), (radius + 0.5, False)):
        engine = GeofenceEngine([circle(1, radius, lat0=lat0, lon0=LON0)])
        east, north = unit[0] * distance, unit[1] * distance
        got = engine.evaluate([fix(east, north, 0, lat0=lat0, lon0=LON0)])
        assert bool(got) is inside, (distance, bearing)


@pytest.mark.parametrize("lat0", [LAT0, 60.0])
def test_a_corridor_is_its_width_in_metres(lat0: float) -> None:
    # An east-west corridor 40 m wide, 2 km long, then one running north-east.
    for points in ([(-1000, 0), (1000, 0)], [(-700, -700), (700, 700)]):
        fence = corridor(1, points, 40, lat0=lat0, lon0=LON0)
        (x0, y0), (x1, y1) = points
        length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
        normal = (-(y1 - y0) / length, (x1 - x0) / length)
        for offset, inside in ((19.5, True), (20.5, False), (-19.5, True), (-20.5, False)):
            engine = GeofenceEngine([fence])
            east, north = normal[0] * offset, normal[1] * offset
            got = engine.evaluate([fix(east, north, 0, lat0=lat0, lon0=LON0)])
            assert bool(got) is inside, (points, offset, lat0)


@pytest.mark.parametrize("lat0", [LAT0, 60.0])
def test_an_area_depth_is_metres_to_its_boundary(lat0: float) -> None:
    fence = square(1, 500, lat0=lat0, lon0=LON0, enter_margin_m=50, exit_margin_m=50)
    for east, north, inside in ((0, 449, True), (0, 451, False), (449, 0, True), (451, 0, False)):
        engine = GeofenceEngine([fence])
        assert bool(engine.evaluate([fix(east, north, 0, lat0=lat0, lon0=LON0)])) is inside
    engine = GeofenceEngine([fence])
    engine.evaluate([fix(0, 0, 0, lat0=lat0, lon0=LON0)])
    assert engine.evaluate([fix(0, 549, 1, lat0=lat0, lon0=LON0)]) == []
    assert engine.evaluate([fix(0, 551, 2, lat0=lat0, lon0=LON0)]) != []


def test_a_hole_is_outside() -> None:
    outer = [lonlat(-500, -500), lonlat(500, -500), lonlat(500, 500), lonlat(-500, 500)]
    hole = [lonlat(-100, -100), lonlat(-100, 100), lonlat(100, 100), lonlat(100, -100)]
    geometry = {"type": "Polygon", "coordinates": [[*outer, outer[0]], [*hole, hole[0]]]}
    fence = Geofence(id=1, name="ring", kind=GeofenceKind.RESTRICTED, geometry=geometry)
    engine = GeofenceEngine([fence])
    assert kinds(engine.evaluate([fix(300, 0, 0)])) == [(1, ENTER)]
    assert kinds(engine.evaluate([fix(0, 0, 1)])) == [(1, EXIT)]


def test_a_multipolygon_is_one_fence() -> None:
    left = [lonlat(-600, -100), lonlat(-400, -100), lonlat(-400, 100), lonlat(-600, 100)]
    right = [lonlat(400, -100), lonlat(600, -100), lonlat(600, 100), lonlat(400, 100)]
    geometry = {"type": "MultiPolygon", "coordinates": [[[*left, left[0]]], [[*right, right[0]]]]}
    fence = Geofence(
        id=1, name="two lots", kind=GeofenceKind.PARKING_ZONE, geometry=geometry,
        enter_margin_m=0, exit_margin_m=0,
    )  # fmt: skip
    engine = GeofenceEngine([fence])
    assert kinds(run(engine, [fix(-500, 0, 0), fix(0, 0, 600), fix(500, 0, 1200)])) == [
        (1, ENTER),
        (1, EXIT),
        (1, ENTER),
    ]


# --- dwell ---------------------------------------------------------------------------------------


def test_dwell_enters_after_a_continuous_stay_at_any_depth() -> None:
    engine = GeofenceEngine([square(1, 100, enter_margin_m=50, dwell_s=60)])
    # 10 m inside, never 50 m: only dwell can enter.
    assert run(engine, [fix(90, 0, s) for s in (0, 30, 59)]) == []
    entered = engine.evaluate([fix(90, 0, 60)])
    assert kinds(entered) == [(1, ENTER)]
    assert entered[0].cause is Cause.DWELL
    assert entered[0].ts == T0 + timedelta(seconds=60)


def test_dwell_restarts_when_the_stay_is_broken() -> None:
    engine = GeofenceEngine([square(1, 100, enter_margin_m=50, dwell_s=60)])
    assert run(engine, [fix(90, 0, 0), fix(90, 0, 40), fix(101, 0, 50)]) == []
    assert run(engine, [fix(90, 0, 55), fix(90, 0, 100)]) == []  # 45 s since 55
    assert kinds(engine.evaluate([fix(90, 0, 115)])) == [(1, ENTER)]


def test_margin_enters_without_waiting_for_dwell() -> None:
    engine = GeofenceEngine([square(1, 100, enter_margin_m=10, dwell_s=600)])
    entered = engine.evaluate([fix(0, 0, 0)])
    assert [(t.kind, t.cause) for t in entered] == [(ENTER, Cause.MARGIN)]


def test_a_pending_dwell_is_saved_and_resumed() -> None:
    fence = square(1, 100, enter_margin_m=50, dwell_s=60)
    engine = GeofenceEngine([fence])
    engine.evaluate([fix(90, 0, 0)])
    (state,) = engine.dirty_states()
    assert not state.inside
    assert state.pending_since == T0
    again = GeofenceEngine([fence])
    again.load_state([state])
    assert kinds(again.evaluate([fix(90, 0, 61)])) == [(1, ENTER)]


# --- segment crossing ----------------------------------------------------------------------------


def test_a_sparse_track_through_a_narrow_fence_enters_and_exits_between_fixes() -> None:
    # A corridor 30 m wide, north-south; two fixes 500 m apart on either side, 50 s apart.
    fence = corridor(1, [(0, -1000), (0, 1000)], 30, enter_margin_m=5, exit_margin_m=5)
    engine = GeofenceEngine([fence])
    got = engine.evaluate([fix(-250, 0, 0), fix(250, 0, 50)])
    assert [(t.kind, t.cause) for t in got] == [(ENTER, Cause.CROSSING), (EXIT, Cause.CROSSING)]
    enter, leave = got
    # Entered 10 m (enter margin) inside the west edge at x = -15 + 5 = -10 m, i.e. at
    # 240 m of 500: 24 s; left the exit margin at x = 15 + 5 = 20 m, i.e. 27 s.
    assert (enter.ts - T0).total_seconds() == pytest.approx(24.0, abs=0.05)
    assert (leave.ts - T0).total_seconds() == pytest.approx(27.0, abs=0.05)
    assert (enter.lat, enter.lon) == pytest.approx(at(-10, 0), abs=1e-6)
    assert engine.dirty_states()[0].inside is False


def test_a_sparse_track_across_a_circle_and_across_batches() -> None:
    engine = GeofenceEngine([circle(1, 50, enter_margin_m=10, exit_margin_m=10)])
    assert engine.evaluate([fix(-300, 20, 0)]) == []
    got = engine.evaluate([fix(300, 20, 60)])  # passes 20 m from the centre: 30 m deep
    assert [(t.kind, t.cause) for t in got] == [(ENTER, Cause.CROSSING), (EXIT, Cause.CROSSING)]
    # Enters the 40 m circle at x = -sqrt(40^2 - 20^2) = -34.6 m: (300 - 34.6) / 600 * 60 s.
    assert (got[0].ts - T0).total_seconds() == pytest.approx(26.54, abs=0.05)


def test_a_step_that_only_grazes_the_margin_is_no_crossing() -> None:
    engine = GeofenceEngine([circle(1, 50, enter_margin_m=10, exit_margin_m=10)])
    # Passes 45 m from the centre: inside the circle, but not 10 m deep.
    assert run(engine, [fix(-300, 45, 0), fix(300, 45, 60)]) == []


def test_a_step_ending_shallow_inside_enters_by_crossing_and_stays_in() -> None:
    engine = GeofenceEngine([square(1, 100, enter_margin_m=20, exit_margin_m=20)])
    # From outside the west edge, through the square, to 5 m inside the east edge.
    got = run(engine, [fix(-300, 0, 0), fix(95, 0, 40)])
    assert [(t.kind, t.cause) for t in got] == [(ENTER, Cause.CROSSING)]


@pytest.mark.parametrize("in_one_batch", [True, False])
def test_a_short_step_ending_shallow_inside_still_crosses(*, in_one_batch: bool) -> None:
    # A corridor 22 m wide, margins 10 m: its middle is 11 m deep. From 5 m west of it,
    # straight across to 5 m inside its east edge: 22 m, shorter than "5 m out + twice the
    # margin" though the middle of the step is deep enough to enter.
    fence = corridor(1, [(0, -1000), (0, 1000)], 22, enter_margin_m=10, exit_margin_m=10)
    engine = GeofenceEngine([fence])
    track = [fix(-16, 0, 0), fix(6, 0, 4), fix(40, 0, 10)]
    got = engine.evaluate(track) if in_one_batch else run(engine, track)
    assert [(t.kind, t.cause) for t in got] == [(ENTER, Cause.CROSSING), (EXIT, Cause.MARGIN)]


def test_long_gaps_are_not_trusted_for_crossing() -> None:
    engine = GeofenceEngine([circle(1, 50)], max_crossing_gap_s=300)
    assert run(engine, [fix(-300, 0, 0), fix(300, 0, 301)]) == []
    assert len(run(engine, [fix(-300, 0, 0, car="b"), fix(300, 0, 300, car="b")])) == 2


def test_crossing_resumes_from_loaded_positions() -> None:
    engine = GeofenceEngine([circle(1, 50)])
    lat, lon = at(-300, 0)
    engine.load_state([], [VehiclePosition("car-1", T0, lat, lon)])
    assert len(engine.evaluate([fix(300, 0, 60)])) == 2


# --- order and replays ---------------------------------------------------------------------------


def test_a_batch_in_any_order_is_sorted_per_vehicle() -> None:
    engine = GeofenceEngine([circle(1, 100)])
    track = [fix(-500 + 100 * k, 0, 10 * k) for k in range(11)]
    got = engine.evaluate(list(reversed(track)))
    assert kinds(got) == [(1, ENTER), (1, EXIT)]
    assert got[0].ts < got[1].ts


def test_old_and_repeated_fixes_change_nothing() -> None:
    engine = GeofenceEngine([circle(1, 100)])
    assert kinds(engine.evaluate([fix(0, 0, 10)])) == [(1, ENTER)]
    # A late fix from before, far outside: a replay, not an exit.
    assert engine.evaluate([fix(5000, 0, 5), fix(0, 0, 10)]) == []
    assert engine.stats.replayed == 2
    assert kinds(engine.evaluate([fix(5000, 0, 11)])) == [(1, EXIT)]


def test_vehicles_are_independent() -> None:
    engine = GeofenceEngine([circle(1, 100)])
    got = engine.evaluate([fix(0, 0, 0, car="a"), fix(500, 0, 0, car="b"), fix(0, 0, 1, car="b")])
    assert sorted((t.vehicle_id, t.kind) for t in got) == [("a", ENTER), ("b", ENTER)]


# --- schedules -----------------------------------------------------------------------------------

# 2026-03-02 is a Monday; 08:00 UTC is 16:00 in Shanghai.
NIGHTS = Schedule.model_validate(
    {"days": [1], "from": "22:00", "to": "06:00", "tz": "Asia/Shanghai"}
)


def hours(local_hour: float) -> float:
    """Seconds after T0 of a Shanghai wall-clock hour on Monday (may pass midnight)."""
    return (local_hour - 16) * 3600


def test_an_inactive_fence_neither_enters_nor_exits() -> None:
    engine = GeofenceEngine([circle(1, 100, schedule=NIGHTS)])
    assert engine.evaluate([fix(0, 0, hours(21))]) == []  # inside, before the window
    # The window opens: the next fix enters.
    entered = engine.evaluate([fix(0, 0, hours(22.5))])
    assert kinds(entered) == [(1, ENTER)]
    # Tuesday 05:00 is still Monday's window; at 07:00 it has closed: leaving is not reported.
    assert engine.evaluate([fix(0, 0, hours(29))]) == []
    assert engine.evaluate([fix(5000, 0, hours(31))]) == []
    # The state waited: at next Monday's 22:00 the vehicle is found outside.
    assert kinds(engine.evaluate([fix(5000, 0, hours(22 + 7 * 24))])) == [(1, EXIT)]


def test_a_dwell_does_not_run_outside_the_window() -> None:
    engine = GeofenceEngine([circle(1, 100, enter_margin_m=90, dwell_s=600, schedule=NIGHTS)])
    stay = [fix(50, 0, hours(h)) for h in (21.8, 21.9, 22.0, 22.1)]
    assert run(engine, stay) == []  # dwell began at 22:00
    assert kinds(engine.evaluate([fix(50, 0, hours(22.17))])) == [(1, ENTER)]


# --- state: save, load, reload ----------------------------------------------------------------


def test_dirty_states_say_what_changed_once() -> None:
    engine = GeofenceEngine([circle(1, 100), circle(2, 100, east_m=1000)])
    engine.evaluate([fix(0, 0, 0)])
    (state,) = engine.dirty_states()
    assert state == GeofenceState("car-1", 1, True, T0, None, T0, *at(0, 0))
    assert engine.dirty_states() == []
    engine.evaluate([fix(0, 0, 1)])  # nothing changed
    assert engine.dirty_states() == []
    engine.evaluate([fix(1000, 0, 100)])
    states = {s.geofence_id: s for s in engine.dirty_states()}
    assert states[1].inside is False
    assert states[2].inside is True
    assert [s.geofence_id for s in engine.states()] == [2]


def test_a_loaded_inside_state_raises_no_second_enter() -> None:
    fence = circle(1, 100)
    first = GeofenceEngine([fence])
    first.evaluate([fix(0, 0, 0)])
    saved = first.dirty_states()
    restarted = GeofenceEngine([fence])
    restarted.load_state(saved)
    assert restarted.evaluate([fix(0, 0, 10)]) == []
    # A replay of the fix that entered is older than the state: nothing.
    assert restarted.evaluate([fix(5000, 0, 0)]) == []
    assert kinds(restarted.evaluate([fix(5000, 0, 20)])) == [(1, EXIT)]


def test_a_replaced_vehicle_with_no_stored_state_is_outside() -> None:
    # Another hub moved the car on and nothing is stored for it (say, the fence was
    # deactivated and reactivated meanwhile): it is outside, so leaving raises nothing.
    engine = GeofenceEngine([circle(1, 100)])
    assert kinds(engine.evaluate([fix(0, 0, 0)])) == [(1, ENTER)]
    assert engine.evaluate([fix(0, 1, 1)]) == []
    engine.replace_vehicles(["car-1"], [], [])
    assert engine.states() == []
    assert engine.evaluate([fix(5_000, 0, 10)]) == []


def test_reload_keeps_state_of_fences_that_remain() -> None:
    engine = GeofenceEngine([circle(1, 100), circle(2, 100)])
    assert len(engine.evaluate([fix(0, 0, 0)])) == 2
    engine.reload([circle(2, 100), circle(3, 100, east_m=2000)])
    assert [s.geofence_id for s in engine.states()] == [2]
    assert engine.evaluate([fix(0, 0, 1)]) == []
    # A fence that moved away: the vehicle inside it is now far out, and exits.
    engine.reload(FenceIndex([circle(2, 100, east_m=-2000), circle(3, 100, east_m=2000)]))
    assert kinds(engine.evaluate([fix(0, 0, 2)])) == [(2, EXIT)]
    assert engine.geofence(3) is not None
    assert engine.geofence(1) is None


def test_an_engine_without_fences_evaluates_to_nothing() -> None:
    engine = GeofenceEngine()
    assert engine.evaluate([fix(0, 0, 0)]) == []
    assert engine.evaluate([]) == []


def test_transitions_come_in_time_order_across_vehicles_and_fences() -> None:
    fences = [circle(1, 100), circle(2, 100, east_m=400)]
    engine = GeofenceEngine(fences)
    track = [fix(-300 + 50 * k, 0, 5 * k, car=car) for k in range(20) for car in ("a", "b")]
    got = engine.evaluate(track)
    assert [t.ts for t in got] == sorted(t.ts for t in got)
    assert len(got) == 8


def test_interpolated_times_are_aware_utc() -> None:
    engine = GeofenceEngine([circle(1, 50)])
    got = engine.evaluate([fix(-300, 0, 0), fix(300, 0, 60)])
    assert all(t.ts.tzinfo is UTC for t in got)
    assert got[0].ts > datetime(2026, 1, 1, tzinfo=UTC)


def test_the_fences_a_vehicle_is_in_and_their_speed_limit() -> None:
    fences = [
        circle(1, 500, speed_limit_kmh=30),
        circle(2, 100, speed_limit_kmh=10, schedule=NIGHTS),
        circle(3, 100, kind=GeofenceKind.SERVICE_AREA),
    ]
    engine = GeofenceEngine(fences)
    engine.evaluate([fix(0, 0, hours(23))])
    assert sorted(f.id for f in engine.inside("car-1")) == [1, 2, 3]
    assert engine.speed_limit_kmh("car-1", T0 + timedelta(seconds=hours(23))) == 10
    assert engine.speed_limit_kmh("car-1", T0) == 30  # 16:00: the night limit is off
    assert engine.inside("nobody") == []
    assert engine.speed_limit_kmh("nobody", T0) is None
