"""Safety rules applied before acting on a verified command."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.acks import REASON_UNSAFE_WHILE_MOVING
from protocol.commands import Action
from vehicle_agent.backends.base import Position, VehicleStatus
from vehicle_agent.safety import REASON_ALARM_ACTIVE, SafetyRules

RULES = SafetyRules(max_immobilize_speed_kmh=5.0)


def status(*, engine_on: bool = False, alarm: bool | None = False) -> VehicleStatus:
    return VehicleStatus(
        locked=True,
        doors_open=False,
        engine_on=engine_on,
        odometer_km=1.0,
        fuel_pct=50.0,
        alarm=alarm,
    )


def at_speed(speed: float) -> Position:
    return Position(31.0, 121.0, speed, 0.0)


@given(st.floats(0, 400), st.booleans())
def test_immobilize_only_standing_still_with_the_engine_off(speed: float, engine: bool) -> None:
    reason = RULES.refusal(Action.IMMOBILIZE, status(engine_on=engine), at_speed(speed))
    safe = speed <= 5.0 and not engine
    assert reason == (None if safe else REASON_UNSAFE_WHILE_MOVING)


def test_immobilize_without_a_gps_fix_depends_on_the_engine() -> None:
    # An underground car park: no speed reading, but a car with its engine off is not driving.
    assert RULES.refusal(Action.IMMOBILIZE, status(), None) is None
    assert RULES.refusal(Action.IMMOBILIZE, status(engine_on=True), None) == (
        REASON_UNSAFE_WHILE_MOVING
    )


def test_gps_noise_at_rest_does_not_block_immobilize() -> None:
    assert RULES.refusal(Action.IMMOBILIZE, status(), at_speed(1.8)) is None


@pytest.mark.parametrize("action", [a for a in Action if a is not Action.IMMOBILIZE])
def test_other_actions_are_allowed_while_driving(action: Action) -> None:
    assert RULES.refusal(action, status(engine_on=True), at_speed(90.0)) is None


def test_no_unlock_while_the_alarm_sounds_unless_configured() -> None:
    assert RULES.refusal(Action.UNLOCK, status(alarm=True), None) == REASON_ALARM_ACTIVE
    assert RULES.refusal(Action.UNLOCK, status(alarm=None), None) is None
    assert RULES.refusal(Action.LOCK, status(alarm=True), None) is None
    lenient = SafetyRules(allow_unlock_during_alarm=True)
    assert lenient.refusal(Action.UNLOCK, status(alarm=True), None) is None
