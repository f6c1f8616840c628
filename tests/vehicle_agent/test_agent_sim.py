"""The simulated car the simulator drives and `freecar agent` parks."""

from __future__ import annotations

import asyncio

import pytest

from protocol.commands import Action
from vehicle_agent.backends.base import Actuator, PositionSource, StatusSource
from vehicle_agent.backends.sim import SimCar, distance_km


def test_a_sim_car_is_every_backend_at_once() -> None:
    car = SimCar(lat=1.0, lon=2.0)
    assert isinstance(car, PositionSource)
    assert isinstance(car, StatusSource)
    assert isinstance(car, Actuator)


def test_a_new_car_is_parked_where_it_was_put() -> None:
    car = SimCar(lat=31.2, lon=121.4, heading=45.0, battery_pct=90.0, fuel_pct=None)
    position = car.position()
    assert position is not None
    assert (position.lat, position.lon, position.speed_kmh, position.heading) == (
        31.2,
        121.4,
        0.0,
        45.0,
    )
    status = car.status()
    assert (status.locked, status.doors_open, status.engine_on, status.alarm) == (
        True,
        False,
        False,
        False,
    )
    assert (status.fuel_pct, status.battery_pct) == (None, 90.0)


def test_moving_advances_the_odometer_also_through_a_tunnel() -> None:
    car = SimCar(lat=0.0, lon=0.0, odometer_km=100.0)
    car.move_to(0.0, 0.01, 50.0, 90.0, accuracy_m=3.0)
    step = distance_km(0.0, 0.0, 0.0, 0.01)
    assert car.status().odometer_km == pytest.approx(100.0 + step)
    car.lose_fix()
    assert car.position() is None
    car.move_to(0.0, 0.03, 50.0, 90.0)
    assert car.status().odometer_km == pytest.approx(100.0 + 3 * step, rel=1e-6)
    assert car.position() is not None


def test_one_degree_of_longitude_at_the_equator() -> None:
    assert distance_km(0.0, 0.0, 0.0, 1.0) == pytest.approx(111.19, abs=0.01)


def test_update_changes_status_fields() -> None:
    car = SimCar(lat=0.0, lon=0.0)
    car.update(doors_open=True, fuel_pct=8.0, alarm=True)
    status = car.status()
    assert (status.doors_open, status.fuel_pct, status.alarm) == (True, 8.0, True)


def test_actions_change_the_car() -> None:
    car = SimCar(lat=0.0, lon=0.0)

    async def act() -> None:
        await car.start()
        for action in (Action.UNLOCK, Action.IMMOBILIZE, Action.HONK, Action.LOCATE):
            await car.perform(action)
        assert not car.status().locked
        assert car.immobilized
        await car.perform(Action.MOBILIZE)
        await car.perform(Action.LOCK)
        await car.close()

    asyncio.run(act())
    assert car.status().locked
    assert not car.immobilized
    assert car.performed == [
        Action.UNLOCK,
        Action.IMMOBILIZE,
        Action.HONK,
        Action.LOCATE,
        Action.MOBILIZE,
        Action.LOCK,
    ]


def test_a_car_without_fuel_or_battery_level_is_refused() -> None:
    with pytest.raises(ValueError, match="fuel_pct, battery_pct"):
        SimCar(lat=0.0, lon=0.0, fuel_pct=None, battery_pct=None)
