"""Properties of the geofence engine over random tracks (hypothesis).

Kept quick: few fences, short tracks, and a bounded number of examples, so the whole file
runs in a few seconds.
"""

from __future__ import annotations

import math
from collections import defaultdict

from geofence_testing import Fix, circle, corridor, fix, square
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.geofences import Geofence, Schedule
from hub.geofences import GeofenceEngine, GeofenceTransition, TransitionKind

ENTER, EXIT = TransitionKind.ENTER, TransitionKind.EXIT
# Room left inside the margins, in metres: more than a chord's sagitta on the circle below
# (steps of at most 20 m on a 300 m radius: 20^2 / (8 * 300) = 0.17 m) and than the plane's
# scale drift over a kilometre (0.02%).
EPSILON_M = 1.0
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

margins = st.floats(5, 40)
accuracies = st.one_of(st.just(0.0), st.floats(0, 5))


def evaluate_in_chunks(
    engine: GeofenceEngine, fixes: list[Fix], cuts: list[int]
) -> list[GeofenceTransition]:
    out: list[GeofenceTransition] = []
    start = 0
    for cut in [*sorted(cuts), len(fixes)]:
        out += engine.evaluate(fixes[start:cut])
        start = max(start, cut)
    return out


def canonical(transitions: list[GeofenceTransition]) -> list[tuple[object, ...]]:
    return sorted(
        (t.vehicle_id, t.geofence_id, t.ts, t.kind, t.cause, round(t.lat, 9), round(t.lon, 9))
        for t in transitions
    )


@FAST
@given(
    enter=margins,
    leave=margins,
    data=st.data(),
    start_inside=st.booleans(),
    cuts=st.lists(st.integers(0, 80), max_size=4),
)
def test_jitter_along_an_edge_never_flaps(
    enter: float, leave: float, data: st.DataObject, *, start_inside: bool, cuts: list[int]
) -> None:
    fence = square(1, 500, enter_margin_m=enter, exit_margin_m=leave)
    # Along the east edge (x = 500), never as deep as the enter margin nor as far out as the
    # exit margin, with any accuracy (which only makes both harder).
    offsets = data.draw(
        st.lists(st.floats(-(leave - EPSILON_M), enter - EPSILON_M), min_size=2, max_size=60)
    )
    track = [fix(0, 0, 0)] if start_inside else []
    for k, offset in enumerate(offsets):
        accuracy = data.draw(accuracies)
        track.append(fix(500 - offset, -400 + 13 * k, 10 + 5 * k, accuracy_m=accuracy))
    got = evaluate_in_chunks(GeofenceEngine([fence]), track, cuts)
    assert [t.kind for t in got] == ([ENTER] if start_inside else [])


@FAST
@given(enter=margins, leave=margins, data=st.data(), start_inside=st.booleans())
def test_jitter_around_a_circle_never_flaps(
    enter: float, leave: float, data: st.DataObject, *, start_inside: bool
) -> None:
    radius = 300.0
    fence = circle(1, radius, enter_margin_m=enter, exit_margin_m=leave)
    offsets = data.draw(
        st.lists(st.floats(-(leave - EPSILON_M), enter - EPSILON_M), min_size=2, max_size=60)
    )
    track = [fix(0, 0, 0)] if start_inside else []
    for k, offset in enumerate(offsets):
        # 15 m of arc per fix, so a chord sags 0.1 m at most.
        angle = k * 15 / radius
        reach = radius - offset
        track.append(fix(reach * math.cos(angle), reach * math.sin(angle), 10 + 5 * k))
    got = GeofenceEngine([fence]).evaluate(track)
    assert [t.kind for t in got] == ([ENTER] if start_inside else [])


@FAST
@given(
    enter=margins,
    leave=margins,
    moves=st.lists(st.booleans(), min_size=1, max_size=30),
    data=st.data(),
)
def test_going_far_enough_in_and_out_alternates_enter_and_exit(
    enter: float, leave: float, moves: list[bool], data: st.DataObject
) -> None:
    fence = square(1, 500, enter_margin_m=enter, exit_margin_m=leave)
    track = []
    for k, inside in enumerate(moves):
        accuracy = data.draw(accuracies)
        # Inside: deeper than the enter margin plus accuracy. Outside: east of the square,
        # further than the exit margin plus accuracy (so no step crosses the square).
        depth = data.draw(st.floats(enter + accuracy + EPSILON_M, 490))
        away = data.draw(st.floats(leave + accuracy + EPSILON_M, 800))
        east = 500 - depth if inside else 500 + away
        track.append(fix(east, data.draw(st.floats(-400, 400)), 30 * k, accuracy_m=accuracy))
    got = GeofenceEngine([fence]).evaluate(track)
    expected = []
    state = False
    for inside in moves:
        if inside != state:
            expected.append(ENTER if inside else EXIT)
            state = inside
    assert [t.kind for t in got] == expected


# Tracks start at 16:00 in Shanghai and last up to two hours.
EVENING = Schedule.model_validate({"from": "16:30", "to": "17:15", "tz": "Asia/Shanghai"})


def _fences() -> list[Geofence]:
    return [
        square(1, 300, enter_margin_m=10, exit_margin_m=10),
        circle(2, 120, east_m=600, enter_margin_m=5, exit_margin_m=15),
        corridor(3, [(-800, 500), (800, -500)], 40, enter_margin_m=5, exit_margin_m=5),
        circle(4, 60, north_m=-500, enter_margin_m=10, exit_margin_m=10, dwell_s=30),
        circle(5, 200, east_m=-500, north_m=500, schedule=EVENING),
    ]


points = st.tuples(st.floats(-1000, 1000), st.floats(-1000, 1000))
tracks = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        points,
        st.integers(1, 120),  # seconds since the vehicle's previous fix
        st.one_of(st.none(), st.floats(0, 30)),
    ),
    min_size=1,
    max_size=60,
)


def _fixes(track: list[tuple[str, tuple[float, float], int, float | None]]) -> list[Fix]:
    clocks: dict[str, int] = defaultdict(int)
    out = []
    for car, (east, north), step, accuracy in track:
        clocks[car] += step
        out.append(fix(east, north, clocks[car], car=car, accuracy_m=accuracy))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(track=tracks, cuts=st.lists(st.integers(0, 60), max_size=5))
def test_any_track_alternates_and_batching_does_not_matter(
    track: list[tuple[str, tuple[float, float], int, float | None]], cuts: list[int]
) -> None:
    fixes = _fixes(track)
    whole = GeofenceEngine(_fences()).evaluate(fixes)
    # Per vehicle and fence: enter, exit, enter... in time order.
    seen: dict[tuple[str, int], list[GeofenceTransition]] = defaultdict(list)
    for transition in whole:
        seen[(transition.vehicle_id, transition.geofence_id)].append(transition)
    for transitions in seen.values():
        assert [t.kind for t in transitions] == [ENTER, EXIT] * (len(transitions) // 2) + (
            [ENTER] if len(transitions) % 2 else []
        )
        assert [t.ts for t in transitions] == sorted(t.ts for t in transitions)
    # The same fixes in several batches give the same transitions.
    chunked = evaluate_in_chunks(GeofenceEngine(_fences()), fixes, cuts)
    assert canonical(chunked) == canonical(whole)


ALWAYS = Schedule.model_validate({"tz": "UTC"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(track=tracks)
def test_the_bulk_path_and_the_fix_by_fix_path_agree(
    track: list[tuple[str, tuple[float, float], int, float | None]],
) -> None:
    # A schedule that is always open sends every key through the fix-by-fix walk.
    plain = [f for f in _fences() if f.dwell_s == 0 and f.schedule is None]
    stepwise = [f.model_copy(update={"schedule": ALWAYS}) for f in plain]
    fixes = _fixes(track)
    bulk = GeofenceEngine(plain).evaluate(fixes)
    walked = GeofenceEngine(stepwise).evaluate(fixes)
    assert canonical(bulk) == canonical(walked)
