"""hub/parking.py: when a parked car really moves, and where it is held until it does."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

import pytest
from geofence_testing import circle
from hypothesis import given, settings
from hypothesis import strategies as st

from db.telemetry import TelemetryRow
from hub import parking
from hub.events.conditions import ConditionDetector, Conditions
from hub.events.pipeline import EventPipeline
from hub.geofences import GeofenceEngine
from hub.parking import Outcome, Parking, ParkingConfig, Sighting, observe, parked_at
from hub.stats import HubStats
from hub.steps import BATCH_STEPS, Work

T0: Final = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
LAT: Final = 31.2304
LON: Final = 121.4737
METRES_PER_DEGREE: Final = 111_195.0
CONFIG: Final = ParkingConfig()


def offset(north_m: float, east_m: float) -> tuple[float, float]:
    """(lat, lon) of a point given in metres from the parked car."""
    lat = LAT + north_m / METRES_PER_DEGREE
    lon = LON + east_m / (METRES_PER_DEGREE * math.cos(math.radians(LAT)))
    return lat, lon


def seen(second: float, north_m: float = 0.0, east_m: float = 0.0, **changes: Any) -> Sighting:
    """A fix of a car with its engine off, `second` s after T0, metres from the parked car."""
    lat, lon = offset(north_m, east_m)
    values: dict[str, Any] = {
        "ts": T0.timestamp() + second,
        "lat": lat,
        "lon": lon,
        "accuracy_m": 5.0,
        "heading": 90.0,
        "engine_on": False,
        "own_position": True,
    }
    values.update(changes)
    return Sighting(**values)


def run(
    sightings: list[Sighting], state: Parking | None = None
) -> tuple[list[Outcome], Parking | None]:
    """Each fix's outcome, and the state after the last."""
    outcomes = []
    for sighting in sightings:
        verdict = observe(state, sighting, CONFIG)
        outcomes.append(verdict.outcome)
        state = verdict.state
    return outcomes, state


def row(second: float, north_m: float = 0.0, east_m: float = 0.0, **changes: Any) -> TelemetryRow:
    """The telemetry row of a locked car with its engine off, as `seen` places it."""
    lat, lon = offset(north_m, east_m)
    values: dict[str, Any] = {
        "vehicle_id": "car-1",
        "ts": T0 + timedelta(seconds=second),
        "seq": int(second * 10),
        "lat": lat,
        "lon": lon,
        "speed_kmh": 0.0,
        "heading": 90.0,
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


# --- the rules -------------------------------------------------------------------------------


def test_the_first_fix_with_the_engine_off_parks_the_car_there() -> None:
    outcomes, state = run([seen(0, 3.0, 4.0, accuracy_m=12.0, heading=45.0)])
    assert outcomes == [Outcome.HELD]
    assert state is not None
    assert state.parked
    assert (state.lat, state.lon) == offset(3.0, 4.0)
    assert (state.error_m, state.accuracy_m, state.heading) == (12.0, 12.0, 45.0)
    assert parked_at(state) == (state.lat, state.lon, 12.0, T0.timestamp())


def test_a_tow_is_proved_by_three_fixes_beyond_the_radius_over_nine_seconds() -> None:
    # Radius: 150 m + 5 m (the held point's error) + 5 m (the fix's accuracy) = 160 m.
    tow = [seen(0), *(seen(10 + 5 * i, 170.0 + 40 * i) for i in range(4))]
    outcomes, state = run(tow)
    assert outcomes == [Outcome.HELD, Outcome.HELD, Outcome.HELD, Outcome.MOVED, Outcome.FREE]
    assert state is not None
    assert not state.parked
    assert parked_at(state) is None


def test_the_run_must_last_nine_seconds_however_many_fixes_it_has() -> None:
    burst = [seen(0), *(seen(10 + 0.5 * i, 400.0) for i in range(18))]
    outcomes, _ = run(burst)
    # 8.5 s after the first fix away is not enough; 9 s is (the 19th fix).
    assert Outcome.MOVED not in outcomes
    assert run([*burst, seen(19, 400.0)])[0][-1] is Outcome.MOVED


def test_one_fix_back_near_the_held_point_starts_the_run_again() -> None:
    wild = [seen(0), seen(10, 300.0), seen(15, 300.0), seen(20, 0.0), seen(25, 300.0)]
    wild += [seen(30, 300.0)]
    outcomes, state = run(wild)
    assert Outcome.MOVED not in outcomes
    assert state is not None
    assert (state.away_fixes, state.away_since) == (2, T0.timestamp() + 25)


def test_the_held_point_error_shrinks_with_better_fixes_and_never_moves_the_point() -> None:
    # A cold start: the first fix says 1,900 m. Then good fixes near it.
    _, state = run([seen(0, accuracy_m=1900.0), seen(5, 20.0, accuracy_m=8.0)])
    assert state is not None
    assert (state.lat, state.lon) == offset(0, 0)
    assert state.error_m == pytest.approx(28.0)
    # So a tow is proved 186 m away instead of 2 km.
    outcomes, _ = run([seen(10 + 5 * i, 200.0 + 40 * i, accuracy_m=8.0) for i in range(3)], state)
    assert outcomes[-1] is Outcome.MOVED


def test_gps_speed_and_heading_are_no_evidence() -> None:
    outcomes, state = run([seen(i, heading=(i * 97) % 360) for i in range(50)])
    assert set(outcomes) == {Outcome.HELD}
    assert state is not None
    assert state.heading == 0.0  # the anchor's


def test_a_carried_position_is_no_evidence_but_anchors_a_car_seen_without_a_fix() -> None:
    far = [seen(0), *(seen(10 + 5 * i, 500.0, own_position=False) for i in range(5))]
    outcomes, _ = run(far)
    assert set(outcomes) == {Outcome.HELD}
    # A car parking in a garage without sky: anchored where it was last seen.
    _, state = run([seen(0, 42.0, own_position=False)])
    assert state is not None
    assert (state.lat, state.lon) == offset(42.0, 0)


def test_a_fix_without_any_position_keeps_a_parked_car_held() -> None:
    outcomes, state = run([seen(0), seen(5, lat=None, lon=None, accuracy_m=None)])
    assert outcomes == [Outcome.HELD, Outcome.HELD]
    assert run([seen(0, lat=None, lon=None)]) == ([Outcome.FREE], None)
    assert state is not None


def test_starting_the_engine_releases_the_car_and_stopping_it_parks_it_again() -> None:
    outcomes, state = run([seen(0), seen(5, 30.0, engine_on=True), seen(60, 900.0)])
    assert outcomes == [Outcome.HELD, Outcome.FREE, Outcome.HELD]
    assert state is not None
    assert (state.lat, state.lon, state.parked) == (*offset(900.0, 0), True)


def test_a_moved_car_stands_again_after_two_minutes_near_one_point_not_at_a_red_light() -> None:
    tow = [seen(0), *(seen(10 + 5 * i, 170.0 + 40 * i) for i in range(3))]
    red_light = [seen(25 + 5 * i, 250.0 + i) for i in range(1, 13)]  # 60 s standing
    driving_on = [seen(95 + 5 * i, 260.0 + 40 * i) for i in range(1, 4)]
    outcomes, state = run(tow + red_light + driving_on)
    assert Outcome.HELD not in outcomes[4:]
    assert state is not None
    assert not state.parked
    dropped = [seen(120 + 10 * i, 380.0 + i % 3) for i in range(13)]
    outcomes, state = run(dropped, state)
    assert outcomes[-1] is Outcome.HELD
    assert state is not None
    assert state.parked
    # Where it came to stand (one of those fixes), not where the tow truck waited.
    assert (state.lat - LAT) * METRES_PER_DEGREE == pytest.approx(381.0, abs=1.0)


def test_a_tow_at_30_kmh_with_a_fix_every_5_s_is_proved_30_s_on_250_m_away() -> None:
    """What docs/events.md promises."""
    tow = [seen(0), *(seen(5 * i, 30 / 3.6 * 5 * i) for i in range(1, 12))]
    verdicts = []
    state = None
    for sighting in tow:
        verdict = observe(state, sighting, CONFIG)
        verdicts.append(verdict)
        state = verdict.state
    [moved] = [v for v in verdicts if v.outcome is Outcome.MOVED]
    assert tow[verdicts.index(moved)].ts - T0.timestamp() == 30.0
    assert moved.moved_m == pytest.approx(250.0, abs=0.5)
    assert (moved.away_s, moved.away_fixes) == (10.0, 3)


# --- properties ------------------------------------------------------------------------------

accuracies = st.floats(2.0, 300.0)
gaps = st.floats(0.2, 120.0)


@st.composite
def wander(draw: st.DrawFn, *, max_size: int = 120) -> list[Sighting]:
    """Fixes of a standing car, each anywhere within its stated accuracy of it."""
    second = 0.0
    sightings: list[Sighting] = []
    for _ in range(draw(st.integers(1, max_size))):
        second += draw(gaps)
        accuracy = draw(accuracies)
        off = draw(st.floats(0.0, 1.0)) * accuracy
        bearing = math.radians(draw(st.floats(0.0, 360.0)))
        own = draw(st.booleans()) or not sightings  # now and then a carried position
        sightings.append(
            seen(
                second,
                off * math.cos(bearing),
                off * math.sin(bearing),
                accuracy_m=accuracy,
                heading=draw(st.floats(0.0, 360.0)),
                own_position=own,
            )
        )
    return sightings


@settings(max_examples=300, deadline=None)
@given(wander())
def test_wander_within_the_stated_accuracy_is_never_a_move_and_stays_held(
    sightings: list[Sighting],
) -> None:
    outcomes, state = run(sightings)
    assert set(outcomes) == {Outcome.HELD}
    assert state is not None
    first = sightings[0]
    assert (state.lat, state.lon) == (first.lat, first.lon)  # the held point never moves


@settings(max_examples=100, deadline=None)
@given(wander(max_size=60), st.data())
def test_wander_never_flaps_a_zone_whose_edge_it_crosses(
    sightings: list[Sighting], data: st.DataObject
) -> None:
    # A zone whose edge passes somewhere within the wander.
    radius = data.draw(st.floats(20.0, 400.0))
    centre_m = data.draw(st.floats(0.0, 1.0)) * 2 * radius
    fence = circle(1, radius, north_m=centre_m, lat0=LAT, lon0=LON)
    engine = GeofenceEngine([fence])
    detector = ConditionDetector()
    rows = [
        row(s.ts - T0.timestamp(), accuracy_m=s.accuracy_m)._replace(
            lat=s.lat,
            lon=s.lon,
            extra=None if s.own_position else {"_hub": {"position_ts": 0}},
        )
        for s in sightings
    ]
    held = detector.hold_parked(rows)
    transitions = []
    for start in range(0, len(held), 7):  # in batches, as the hub sees them
        batch = held[start : start + 7]
        detector.apply_fixes(batch, now=T0)
        transitions += engine.evaluate(batch)
    assert len(transitions) <= 1  # at most entering once, where it was parked


@st.composite
def tows(draw: st.DrawFn) -> tuple[list[Sighting], list[Sighting]]:
    """A standing car's wander, then a real move: a tow, a push, a lift onto a truck."""
    standing = draw(wander(max_size=30))
    second = standing[-1].ts - T0.timestamp()
    # Far enough that no fix, whatever its stated error, can still be near the held point.
    start_m = CONFIG.away_m + 2 * 300.0 + 300.0 + draw(st.floats(1.0, 5000.0))
    bearing = math.radians(draw(st.floats(0.0, 360.0)))
    speed_ms = draw(st.floats(0.0, 40.0))
    away = []
    for _ in range(draw(st.integers(10, 30))):
        second += draw(st.floats(1.0, 120.0))
        distance = start_m + speed_ms * (second - standing[-1].ts + T0.timestamp())
        away.append(
            seen(
                second,
                distance * math.cos(bearing),
                distance * math.sin(bearing),
                accuracy_m=draw(accuracies),
            )
        )
    return standing, away


@settings(max_examples=200, deadline=None)
@given(tows())
def test_a_real_move_is_always_proved_within_ten_fixes(
    case: tuple[list[Sighting], list[Sighting]],
) -> None:
    standing, away = case
    outcomes, _ = run(standing + away)
    moved = outcomes[len(standing) :]
    assert Outcome.MOVED in moved
    # The third fix away if they come at least 4.5 s apart; with fixes a second apart, the
    # tenth: every fix a car sends counts, whatever its interval.
    first = away[0].ts
    needed = next(
        i
        for i, s in enumerate(away)
        if i + 1 >= CONFIG.confirm_fixes and s.ts - first >= CONFIG.confirm_s
    )
    assert moved.index(Outcome.MOVED) == needed
    assert needed < 10  # the bound the docs give


sightings_any = st.builds(
    Sighting,
    ts=st.floats(0, 1e10),
    lat=st.one_of(st.none(), st.floats(-90, 90)),
    lon=st.floats(-180, 180),
    accuracy_m=st.one_of(st.none(), st.floats(0, 1e6)),
    heading=st.one_of(st.none(), st.floats(0, 360)),
    engine_on=st.booleans(),
    own_position=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(sightings_any, max_size=80))
def test_the_state_stays_a_few_numbers_and_survives_its_json(sightings: list[Sighting]) -> None:
    state = None
    for sighting in sorted(sightings, key=lambda s: s.ts):
        if sighting.lat is None:
            sighting = sighting._replace(lon=None)  # noqa: PLW2901 - lat and lon go together
        state = observe(state, sighting, CONFIG).state
        if state is not None:
            text = json.dumps(state.to_json())
            assert len(text) < 400  # bounded whatever the history
            assert Parking.from_json(json.loads(text)) == state


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(),
        st.dictionaries(
            st.sampled_from(["parked", "lat", "lon", "since", "error_m", "away_fixes", "x"]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
        ),
    )
)
def test_a_state_that_was_not_saved_by_the_hub_starts_afresh(data: object) -> None:
    state = Parking.from_json(data)  # never raises
    assert state is None or (-90 <= state.lat <= 90 and state.error_m >= 0)
    saved = {"parked": True, "lat": LAT, "lon": LON, "since": 1.0, "error_m": 5.0}
    assert Parking.from_json(saved) == Parking(True, LAT, LON, 1.0, 5.0)


# --- rows as the hub stores them ---------------------------------------------------------------


def test_a_held_row_keeps_what_the_car_sent_and_gives_it_back() -> None:
    state = observe(None, seen(0), CONFIG).state
    assert state is not None
    sent = row(5, 120.0, speed_kmh=64.0, heading=271.0, accuracy_m=41.8, extra={"rssi": -70})
    held = parking.hold(sent, state)
    assert (held.lat, held.lon, held.speed_kmh, held.heading, held.accuracy_m) == (
        LAT,
        LON,
        0.0,
        90.0,
        5.0,
    )
    assert held.extra is not None
    assert held.extra["rssi"] == -70
    assert held.extra["_hub"]["raw"]["speed_kmh"] == 64.0
    assert parking.received(held) == sent
    assert sent.extra == {"rssi": -70}  # the car's extras are never changed in place


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.floats(), st.text())))
def test_a_raw_note_the_hub_did_not_write_is_not_restored(raw: dict[str, object]) -> None:
    forged = row(0, extra={"_hub": {"raw": raw}})
    back = parking.received(forged)
    assert (back.lat, back.lon) in {(forged.lat, forged.lon), (raw.get("lat"), raw.get("lon"))}
    assert back.extra is None


def test_a_car_cannot_raise_the_alarm_by_marking_its_own_fix() -> None:
    detector = ConditionDetector()
    forged = {"_hub": {"moved": {"moved_m": 999.0, "away_s": 60.0, "fixes": 3}}}
    rows = [row(0), row(5, extra=forged)]
    held = detector.hold_parked(rows)
    assert parking.move_mark(held[1]) is None
    assert detector.apply_fixes(held, now=T0) == []


def test_a_batch_written_again_after_a_rollback_is_decided_the_same_way() -> None:
    rows = [row(0), *(row(10 + 5 * i, 170.0 + 40 * i, speed_kmh=30.0) for i in range(5))]
    first = ConditionDetector()
    done = first.hold_parked(rows)
    # The retry starts from the state the database held before the batch (none here), and
    # gets the rows as the first attempt left them.
    again = ConditionDetector().hold_parked(done)
    assert again == done
    assert [parking.move_mark(r) is not None for r in again] == [False] * 3 + [True, False, False]


def test_late_fixes_are_held_if_the_car_was_parked_by_then_and_are_no_evidence() -> None:
    detector = ConditionDetector()
    detector.apply_fixes(detector.hold_parked([row(0), row(100)]), now=T0)
    late = [row(50, 500.0), row(60, 500.0), row(70, 500.0), row(-10, 500.0)]
    held = detector.hold_parked(late)
    assert [r.lat for r in held] == [LAT, LAT, LAT, late[3].lat]  # before parking: as sent
    record = detector.record("car-1")
    assert record.parking is not None
    assert record.parking.away_fixes == 0


def test_a_failure_on_one_vehicle_leaves_its_fixes_as_received_and_holds_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = parking.observe

    def failing(state: Parking | None, sighting: Sighting, config: ParkingConfig) -> Any:
        if sighting.heading == 13.0:  # the marked vehicle's fixes
            raise RuntimeError("a bug")
        return real(state, sighting, config)

    monkeypatch.setattr(parking, "observe", failing)
    detector = ConditionDetector()
    forged = {"_hub": {"moved": {"moved_m": 1.0}}}
    broken = [
        row(0, vehicle_id="car-2", heading=13.0, extra=forged),
        row(5, 50.0, vehicle_id="car-2"),
    ]
    fine = [row(0), row(5, 50.0)]
    held = detector.hold_parked(broken + fine)
    assert held[0] == broken[0]._replace(extra=None)  # as received, the forged mark dropped
    assert held[1] == broken[1]
    assert held[3].lat == LAT  # the other car is held
    assert detector.record("car-2").parking is None


def test_the_parking_state_is_saved_with_the_conditions_and_restored() -> None:
    detector = ConditionDetector()
    rows = [row(0), row(10, 300.0), row(15, 300.0)]  # two fixes of a run under way
    detector.apply_fixes(detector.hold_parked(rows), now=T0)
    saved = {vid: json.loads(json.dumps(c.to_json())) for vid, c in detector.take_dirty().items()}
    restarted = ConditionDetector()
    restarted.load({vid: Conditions.from_json(data) for vid, data in saved.items()})
    held = restarted.hold_parked([row(20, 300.0)])
    assert parking.move_mark(held[0]) is not None  # the third fix away, across the restart
    # A record saved before parking was known (an older hub) starts without one.
    old = Conditions.from_json({"low_fuel": True, "locked_lat": 1.0, "locked_lon": 2.0})
    assert (old.low_fuel, old.parking) == (True, None)


def test_the_hold_step_rewrites_a_batch_in_place_and_its_newest_rows_with_it() -> None:
    # No Redis is contacted: the pipeline connects only to publish; the step needs no database.
    pipeline = EventPipeline("redis://127.0.0.1:9", stats=HubStats())
    rows = [row(0), row(5, 80.0, speed_kmh=45.0), row(3, 0.0, vehicle_id="car-2", engine_on=True)]
    batch_rows = list(rows)
    work = Work(pipeline, timedelta(minutes=5), rows=batch_rows, latest={"car-1": rows[1]})
    hold = next(step for step in BATCH_STEPS if step.name == "hold_parked")
    hold.run(cast("Any", None), work)
    assert work.rows is batch_rows  # in place: the batch's messages index rows by position
    assert [(r.lat, r.speed_kmh) for r in batch_rows[:2]] == [(LAT, 0.0), (LAT, 0.0)]
    assert batch_rows[2] is rows[2]  # driven: untouched
    assert work.latest == {"car-1": batch_rows[1], "car-2": rows[2]}
    pipeline.close()
