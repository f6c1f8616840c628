"""CanBackend on python-can's virtual bus, against a stand-in body controller."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest
from agent_testing import eventually
from can_ecu import LOCK, UNLOCK, running_ecu, virtual_channel

from protocol.acks import REASON_UNSUPPORTED_ACTION
from protocol.commands import Action
from vehicle_agent.backends.base import Actuator, BackendError, StatusSource, VehicleStatus
from vehicle_agent.backends.can import CanBackend
from vehicle_agent.backends.can_signals import SAMPLE_DBC, CanConfigError, CanSignals
from vehicle_agent.config import AgentConfig

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def backend(channel: str, **options: float) -> AsyncIterator[CanBackend]:
    can_backend = CanBackend(channel, interface="virtual", **options)
    await can_backend.start()
    try:
        yield can_backend
    finally:
        await can_backend.close()


def test_it_is_a_status_source_and_an_actuator() -> None:
    can_backend = CanBackend(virtual_channel(), interface="virtual")
    assert isinstance(can_backend, StatusSource)
    assert isinstance(can_backend, Actuator)
    assert can_backend.supported_actions == {Action.LOCK, Action.UNLOCK}


def test_the_agent_configuration_builds_it() -> None:
    channel = virtual_channel()
    config = AgentConfig(
        vehicle_id="car-1",
        mqtt_url="mqtt://127.0.0.1:1883",
        status_backend="can",
        can_interface="virtual",
        can_channel=channel,
        can_dbc=SAMPLE_DBC,
    )

    async def scenario() -> None:
        with running_ecu(channel, Locked=0):
            car = CanBackend.from_config(config)
            await car.start()
            try:
                assert car.status().locked is False
            finally:
                await car.close()

    asyncio.run(scenario())


def test_decodes_every_status_signal_and_follows_changes() -> None:
    channel = virtual_channel()

    async def scenario() -> None:
        with running_ecu(
            channel,
            Locked=1,
            DoorRearRight=1,
            EngineOn=1,
            AlarmActive=1,
            FuelLevel=42.5,
            BatterySoC=80.0,
            Odometer=12345.6,
        ) as ecu:
            async with backend(channel) as car:
                status = car.status()
                assert status == VehicleStatus(
                    locked=True,
                    doors_open=True,
                    engine_on=True,
                    odometer_km=pytest.approx(12345.6),
                    fuel_pct=42.5,
                    battery_pct=80.0,
                    alarm=True,
                )
                ecu.set(Locked=0, DoorRearRight=0, EngineOn=0, AlarmActive=0, FuelLevel=41.0)
                await eventually(lambda: not car.status().doors_open, "the doors to close")
                assert car.status() == VehicleStatus(
                    locked=False,
                    doors_open=False,
                    engine_on=False,
                    odometer_km=pytest.approx(12345.6),
                    fuel_pct=41.0,
                    battery_pct=80.0,
                    alarm=False,
                )
                for door in ("DoorFrontLeft", "Tailgate", "Bonnet"):
                    ecu.set(**{door: 1})
                    await eventually(lambda: car.status().doors_open, f"{door} open")
                    ecu.set(**{door: 0})
                    await eventually(lambda: not car.status().doors_open, f"{door} shut")

    asyncio.run(scenario())


def test_unlock_and_lock_are_sent_and_confirmed_by_the_car() -> None:
    channel = virtual_channel()

    async def scenario() -> None:
        with running_ecu(channel, Locked=1) as ecu:
            async with backend(channel) as car:
                await car.perform(Action.UNLOCK)
                assert ecu.signal("Locked") == 0
                assert car.status().locked is False
                await car.perform(Action.LOCK)
                assert ecu.signal("Locked") == 1
                assert car.status().locked is True
                assert ecu.requests == [UNLOCK, LOCK]

    asyncio.run(scenario())


def test_a_car_that_does_not_confirm_times_out() -> None:
    channel = virtual_channel()

    async def scenario() -> None:
        with running_ecu(channel, deaf=True, Locked=0) as ecu:
            async with backend(channel, confirm_timeout_s=0.3) as car:
                with pytest.raises(BackendError) as caught:
                    await car.perform(Action.LOCK)
                assert caught.value.reason == "actuator_timeout"
                # The request went out; the car just never showed the new state.
                assert ecu.requests == [LOCK]
                assert car.status().locked is False

    asyncio.run(scenario())


def test_a_failed_bus_is_reopened_and_works_again() -> None:
    channel = virtual_channel()

    async def scenario() -> None:
        with running_ecu(channel, Locked=1) as ecu:
            async with backend(channel, reopen_initial_s=0.05) as car:
                failed = car._bus
                assert failed is not None
                # What an unplugged adapter looks like to python-can: every read fails.
                failed.shutdown()
                await eventually(lambda: car._bus not in {None, failed}, "the bus to reopen")
                assert car.status().locked is True  # the last known status stayed
                await car.perform(Action.UNLOCK)
                assert ecu.signal("Locked") == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("action", [Action.HONK, Action.LOCATE, Action.IMMOBILIZE, Action.MOBILIZE])
def test_actions_the_dbc_lacks_are_unsupported(action: Action) -> None:
    channel = virtual_channel()

    async def scenario() -> None:
        with running_ecu(channel) as ecu:
            async with backend(channel) as car:
                with pytest.raises(BackendError) as caught:
                    await car.perform(action)
                assert caught.value.reason == REASON_UNSUPPORTED_ACTION
                assert ecu.requests == []

    asyncio.run(scenario())


def test_a_silent_bus_fails_start_and_names_what_is_missing() -> None:
    async def scenario() -> None:
        car = CanBackend(virtual_channel(), interface="virtual", first_status_timeout_s=0.3)
        with pytest.raises(BackendError) as caught:
            await car.start()
        assert caught.value.reason == "no_status"
        assert "BODY_STATUS.Locked" in str(caught.value)
        with pytest.raises(BackendError):
            car.status()

    asyncio.run(scenario())


def test_an_unknown_interface_fails_start_cleanly() -> None:
    async def scenario() -> None:
        car = CanBackend("can0", interface="no-such-interface")
        with pytest.raises(BackendError) as caught:
            await car.start()
        assert caught.value.reason == "can_unavailable"

    asyncio.run(scenario())


def test_a_signal_missing_from_the_dbc_is_a_config_error() -> None:
    with pytest.raises(CanConfigError, match="NoSuchSignal"):
        CanBackend("can0", signals=CanSignals(locked="NoSuchSignal"))
