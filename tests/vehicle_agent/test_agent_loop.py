"""The agent's loops with no broker to reach: reporting goes on, the connection loop retries."""

from __future__ import annotations

import asyncio

import pytest
from agent_testing import eventually, fast_config, make_agent, parked_car, running

from devstack.ports import free_port
from protocol.telemetry import decode_telemetry
from vehicle_agent.agent import Agent
from vehicle_agent.backends.base import BackendError, VehicleStatus
from vehicle_agent.backends.sim import SimCar
from vehicle_agent.queue import MemoryFixQueue


def unreachable() -> str:
    """A broker URL nobody listens on: every connection attempt fails at once."""
    return f"mqtt://car:pw@127.0.0.1:{free_port()}"


class SilentBus(SimCar):
    """A car whose status source can go quiet, like a CAN bus before its first frame."""

    def __init__(self) -> None:
        super().__init__(lat=31.0, lon=121.0)
        self.quiet = True
        self.started = self.closed = False

    def status(self) -> VehicleStatus:
        if self.quiet:
            raise BackendError("no_status", "nothing on the bus yet")
        return super().status()

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True


def seqs_and_stamps(agent: Agent) -> list[tuple[int, int]]:
    fixes = [
        fix for queued in agent.queue.read(limit=1000) for fix in decode_telemetry(queued.payload)
    ]
    return [(fix.seq, fix.ts) for fix in fixes]


def test_fixes_queue_up_while_the_broker_is_unreachable() -> None:
    agent, _ = make_agent(fast_config(unreachable(), "t"))

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: len(agent.queue) >= 5, "fixes queued offline")
            await eventually(lambda: agent.stats.last_error is not None, "a failed attempt")
        assert not agent.stats.connected
        assert agent.stats.fixes_enqueued == len(agent.queue) == agent.stats.queue_depth
        assert agent.stats.fixes_acked == 0

    asyncio.run(scenario())


def test_stamps_increase_even_when_the_clock_stands_still_or_goes_back() -> None:
    readings = iter([1_750_000_000.0, 1_750_000_000.0, 1_749_999_000.0])
    config = fast_config(unreachable(), "t")
    car = parked_car()
    agent = Agent(
        config,
        position=car,
        status=car,
        actuator=car,
        queue=MemoryFixQueue(100),
        clock=lambda: next(readings, 1_749_000_000.0),
    )

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: len(agent.queue) >= 5, "fixes queued")

    asyncio.run(scenario())
    stamps = seqs_and_stamps(agent)
    assert [seq for seq, _ in stamps] == list(range(len(stamps)))
    assert [ts for _, ts in stamps] == list(
        range(1_750_000_000_000, 1_750_000_000_000 + len(stamps))
    )


def test_report_now_takes_a_fix_at_once() -> None:
    agent, car = make_agent(fast_config(unreachable(), "t", parked_interval_s=3600))

    async def scenario() -> None:
        async with running(agent):
            await eventually(lambda: len(agent.queue) == 1, "the first fix")
            car.update(fuel_pct=12.0)  # not a change that triggers a fix by itself
            agent.report_now()
            await eventually(lambda: len(agent.queue) == 2, "the requested fix")

    asyncio.run(scenario())
    last = decode_telemetry(agent.queue.read(limit=10)[-1].payload)[0]
    assert last.fuel_pct == 12.0


def test_a_status_source_that_goes_quiet_pauses_reporting_without_stopping_the_agent() -> None:
    car = SilentBus()
    agent, _ = make_agent(fast_config(unreachable(), "t"), car)

    async def scenario() -> None:
        async with running(agent) as task:
            await asyncio.sleep(0.2)
            assert len(agent.queue) == 0
            assert not task.done()
            car.quiet = False
            await eventually(lambda: len(agent.queue) >= 1, "a fix once the status is back")

    asyncio.run(scenario())
    assert car.started
    assert car.closed


def test_a_backend_that_cannot_start_ends_run_and_is_not_left_open() -> None:
    class DeadBus(SilentBus):
        async def start(self) -> None:
            raise BackendError("can_unavailable", "no such device")

    car = DeadBus()
    agent, _ = make_agent(fast_config(unreachable(), "t"), car)
    with pytest.raises(BackendError, match="no such device"):
        asyncio.run(agent.run())
    assert not car.closed
