"""The reporting policy: when a tracker takes a fix."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from vehicle_agent.backends.base import Position, VehicleStatus
from vehicle_agent.reporting import ReportingPolicy, Sample, Trigger, heading_delta

POLICY = ReportingPolicy(
    moving_interval_s=5.0, parked_interval_s=60.0, heading_change_deg=30.0, moving_speed_kmh=3.0
)

headings = st.floats(min_value=0, max_value=360, allow_nan=False)
speeds = st.floats(min_value=0, max_value=250, allow_nan=False)
elapsed = st.floats(min_value=0, max_value=600, allow_nan=False)


BASE = VehicleStatus(
    locked=True, doors_open=False, engine_on=False, odometer_km=10.0, fuel_pct=50.0
)


def status(**changes: Any) -> VehicleStatus:
    return replace(BASE, **changes)


@st.composite
def statuses(draw: st.DrawFn) -> VehicleStatus:
    return status(
        locked=draw(st.booleans()),
        doors_open=draw(st.booleans()),
        engine_on=draw(st.booleans()),
        alarm=draw(st.none() | st.booleans()),
        fuel_pct=draw(st.floats(0, 100)),
        odometer_km=draw(st.floats(0, 1e6)),
    )


@st.composite
def samples(draw: st.DrawFn) -> Sample:
    position = draw(
        st.none()
        | st.builds(
            Position,
            lat=st.floats(-90, 90),
            lon=st.floats(-180, 180),
            speed_kmh=speeds,
            heading=headings,
        )
    )
    return Sample(position, draw(statuses()))


def at(speed: float, heading: float, **changes: object) -> Sample:
    return Sample(Position(31.0, 121.0, speed, heading), status(**changes))


@given(samples(), st.floats(0, 1e6))
def test_the_first_sample_is_always_reported(current: Sample, now: float) -> None:
    assert POLICY.decide(None, None, current, now) is Trigger.FIRST


@given(samples(), samples(), elapsed)
def test_a_status_change_is_reported_at_once(last: Sample, current: Sample, gap: float) -> None:
    changed = (last.status.locked, last.status.doors_open, last.status.engine_on) != (
        current.status.locked,
        current.status.doors_open,
        current.status.engine_on,
    ) or bool(last.status.alarm) != bool(current.status.alarm)
    trigger = POLICY.decide(last, 100.0, current, 100.0 + gap)
    assert (trigger is Trigger.STATUS_CHANGE) == changed


@given(samples(), elapsed)
def test_nothing_new_is_reported_only_when_the_interval_is_due(sample: Sample, gap: float) -> None:
    # Same status, same position: the interval alone decides.
    trigger = POLICY.decide(sample, 100.0, sample, 100.0 + gap)
    assert (trigger is Trigger.INTERVAL) == (gap >= POLICY.interval(sample))
    assert trigger in {None, Trigger.INTERVAL}


@given(statuses(), speeds, st.booleans())
def test_driving_reports_more_often_than_parked(
    base: VehicleStatus, speed: float, engine: bool
) -> None:
    sample = Sample(Position(1.0, 2.0, speed, 0.0), replace(base, engine_on=engine))
    driving = sample.status.engine_on or speed >= POLICY.moving_speed_kmh
    expected = POLICY.moving_interval_s if driving else POLICY.parked_interval_s
    assert POLICY.interval(sample) == expected


@given(headings, headings, speeds, st.floats(0, 4.99))
def test_a_sharp_turn_while_moving_is_reported(
    before: float, after: float, speed: float, gap: float
) -> None:
    last, current = at(speed, before), at(speed, after)
    turned = heading_delta(before, after) >= POLICY.heading_change_deg
    moving = speed >= POLICY.moving_speed_kmh
    trigger = POLICY.decide(last, 0.0, current, gap)
    assert (trigger is Trigger.HEADING_CHANGE) == (turned and moving)


def test_a_turn_while_standing_is_not_reported() -> None:
    # A parked car's GPS heading swings wildly; that is not a turn.
    assert POLICY.decide(at(1.0, 0.0), 0.0, at(1.0, 180.0), 1.0) is None


def test_a_turn_across_north_is_measured_the_short_way() -> None:
    assert POLICY.decide(at(50.0, 350.0), 0.0, at(50.0, 10.0), 1.0) is None
    assert POLICY.decide(at(50.0, 350.0), 0.0, at(50.0, 25.0), 1.0) is Trigger.HEADING_CHANGE


def test_losing_the_fix_is_not_a_turn() -> None:
    lost = Sample(None, status())
    assert POLICY.decide(at(50.0, 0.0), 0.0, lost, 1.0) is None


def test_an_unknown_alarm_counts_as_off() -> None:
    assert POLICY.decide(at(0.0, 0.0, alarm=None), 0.0, at(0.0, 0.0, alarm=False), 1.0) is None
    assert POLICY.decide(at(0.0, 0.0, alarm=None), 0.0, at(0.0, 0.0, alarm=True), 1.0) is (
        Trigger.STATUS_CHANGE
    )


@given(headings, headings)
def test_heading_delta_is_symmetric_and_at_most_half_a_turn(a: float, b: float) -> None:
    delta = heading_delta(a, b)
    assert 0 <= delta <= 180
    assert abs(delta - heading_delta(b, a)) < 1e-9
