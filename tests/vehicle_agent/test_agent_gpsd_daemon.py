"""GpsdPositionSource against a real gpsd, fed NMEA through a pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest
from agent_testing import eventually
from gpsd_harness import FakeReceiver, GpsdServer, TrackPoint, find_gpsd, running_gpsd

from vehicle_agent.backends.gpsd import GpsdPositionSource

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from vehicle_agent.backends.base import Position

GPSD = find_gpsd()
pytestmark = pytest.mark.skipif(
    GPSD is None,
    reason="gpsd is not installed: run scripts/install-system-packages as root "
    "(or apt-get install gpsd)",
)

# Parked, then driving off north-east, then turning south; then a point in the southern and
# western hemispheres, where NMEA's S and W letters carry the sign.
TRACK = (
    TrackPoint(31.2304, 121.4737, speed_knots=0.0, course=0.0),
    TrackPoint(31.23105, 121.47452, speed_knots=12.5, course=47.3),
    TrackPoint(31.23213, 121.47601, speed_knots=30.0, course=181.5),
    TrackPoint(-33.86882, -70.64321, speed_knots=5.4, course=359.9),
)
# Short enough for quick tests, long enough that a 10 Hz feed never looks stale.
MAX_AGE_S = 1.0


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    fake = FakeReceiver()
    yield fake
    fake.close()


@pytest.fixture
def gpsd(receiver: FakeReceiver) -> Iterator[GpsdServer]:
    """gpsd reading the fake receiver, not started yet: each test starts it when it wants."""
    assert GPSD is not None
    with running_gpsd(GPSD, receiver.device) as server:
        yield server


@contextlib.asynccontextmanager
async def reading(
    gpsd: GpsdServer, receiver: FakeReceiver, **options: float
) -> AsyncIterator[GpsdPositionSource]:
    """A started source on `gpsd`'s port, with the fake receiver feeding in the background."""
    source = GpsdPositionSource(
        port=gpsd.port, reconnect_initial_s=0.05, reconnect_max_s=0.5, **options
    )
    feeder = asyncio.create_task(receiver.run())
    await source.start()
    try:
        yield source
    finally:
        feeder.cancel()
        await source.close()


def shows(position: Position | None, point: TrackPoint) -> bool:
    """Whether `position` is what gpsd makes of `point` (NMEA carries 1e-7 degrees)."""
    return (
        position is not None
        and abs(position.lat - point.lat) < 1e-6
        and abs(position.lon - point.lon) < 1e-6
        and abs(position.speed_kmh - point.speed_kmh) < 1e-6
        and abs(position.heading - point.course) < 1e-3
    )


async def wait_for_point(source: GpsdPositionSource, point: TrackPoint) -> None:
    await eventually(lambda: shows(source.position(), point), f"the fix {point}")


def test_reports_each_fix_then_none_once_the_receiver_goes_quiet(
    gpsd: GpsdServer, receiver: FakeReceiver
) -> None:
    async def scenario() -> None:
        await asyncio.to_thread(gpsd.start)
        async with reading(gpsd, receiver, max_age_s=MAX_AGE_S) as source:
            for point in TRACK:
                receiver.point = point
                await wait_for_point(source, point)
                position = source.position()
                assert position is not None
                # gpsd derives its error estimate from the GGA's HDOP.
                assert position.accuracy_m is not None
                assert position.accuracy_m > 0
            receiver.point = None
            await eventually(lambda: source.position() is None, "the fix to go stale")
            # Stale because gpsd had nothing new, not because the connection went away.
            assert source.connected

    asyncio.run(scenario())


def test_a_receiver_without_fix_is_reported_as_none_at_once(
    gpsd: GpsdServer, receiver: FakeReceiver
) -> None:
    async def scenario() -> None:
        await asyncio.to_thread(gpsd.start)
        # A long max age: only gpsd's "no fix" report can clear the position in time.
        async with reading(gpsd, receiver, max_age_s=3600.0) as source:
            receiver.point = TRACK[1]
            await wait_for_point(source, TRACK[1])
            receiver.point = TrackPoint(0.0, 0.0, 0.0, 0.0, has_fix=False)
            await eventually(lambda: source.position() is None, "the lost fix")
            receiver.point = TRACK[2]
            await wait_for_point(source, TRACK[2])

    asyncio.run(scenario())


def test_waits_for_gpsd_and_recovers_after_it_is_killed(
    gpsd: GpsdServer, receiver: FakeReceiver
) -> None:
    async def scenario() -> None:
        async with reading(gpsd, receiver, max_age_s=MAX_AGE_S) as source:
            # Started before gpsd: no fix, no error, and it keeps trying.
            receiver.point = TRACK[1]
            assert source.position() is None
            await asyncio.to_thread(gpsd.start)
            await wait_for_point(source, TRACK[1])

            await asyncio.to_thread(gpsd.kill)
            await eventually(lambda: not source.connected, "the lost connection")
            # No fix outlives its max age just because gpsd is away.
            await eventually(lambda: source.position() is None, "the fix to go stale")

            receiver.point = TRACK[2]
            await asyncio.to_thread(gpsd.start)
            await wait_for_point(source, TRACK[2])
            assert source.connected

    asyncio.run(scenario())
