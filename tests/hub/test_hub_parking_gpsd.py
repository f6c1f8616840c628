"""Parked cars whose receivers wander, end to end: recording -> gpsd -> agent -> broker -> hub.

Three recordings of real receivers standing still (tests/hub/data/gpsd) are replayed at
their recorded pace, each into a private gpsd read by a real agent whose car is locked with
the engine off, and one hub stores and judges all three cars. The widest wander (about
200 m) runs across the edge of the parking zone its car stands in; the other two receivers
make gpsd report speeds of 34 to 65 km/h. None of the cars moved: none may raise
`moving_while_locked`, be sent a command, or enter or leave a zone. Before the hub held
parked cars, this replay raised `moving_while_locked` and its rule's immobilize command for
the fast-reporting receivers, and took the wandering car out of its zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import psycopg
import pytest
from gps_recordings import WANDER, fixes, gpsd_harness, nmea_cycles, replay
from hub_testing import hub_settings, query_rows, running_hub, seed_vehicles, wait_until

from db.geofences import save_geofence_states
from db.geofences.model import GeofenceKind, GeofenceSpec, GeofenceState
from db.geofences.repository import insert_geofence
from db.parking import parked_vehicles
from hub.parking import distance_m
from vehicle_agent.agent import Agent
from vehicle_agent.backends.gpsd import GpsdPositionSource
from vehicle_agent.backends.sim import SimCar
from vehicle_agent.config import AgentConfig
from vehicle_agent.queue import MemoryFixQueue

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from devstack.stack import DevStack

harness = gpsd_harness()
GPSD = harness.find_gpsd()
pytestmark = pytest.mark.skipif(
    GPSD is None,
    reason="gpsd is not installed: run scripts/install-system-packages as root "
    "(or apt-get install gpsd)",
)

# Car tag -> recording.
CARS: Final = {"wander": WANDER, "indoor": "garmin-10x", "desk": "motorola-t805"}
# A fix a second, parked or not: every second of the recordings reaches the hub, the most
# evidence a parked car's wander can ever give it.
AGENT_INTERVAL_S: Final = 1.0
# The parking zone of the wandering car: a 45 m circle about a point 30 m west and 15 m
# south of its first fix, so the fixes gpsd makes of the recording fall on both sides of its
# edge, some far enough out to leave it (10 m margin plus the fix's accuracy).
ZONE_OFFSET_M: Final = (-30.0, -15.0)
ZONE_RADIUS_M: Final = 45.0
# Everything the replay may not cause.
FORBIDDEN: Final = ("moving_while_locked", "geofence_enter", "geofence_exit")
METRES_PER_DEGREE: Final = 111_320.0
WAIT_S: Final = 60.0


@pytest.fixture
def receivers() -> Iterator[dict[str, Any]]:
    """A fake receiver (a pty) per car."""
    made = {tag: harness.FakeReceiver() for tag in CARS}
    yield made
    for receiver in made.values():
        receiver.close()


@pytest.fixture
def gpsds(receivers: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A private gpsd per car, started, reading that car's receiver."""
    with contextlib.ExitStack() as stack:
        servers = {
            tag: stack.enter_context(harness.running_gpsd(GPSD, receiver.device))
            for tag, receiver in receivers.items()
        }
        for server in servers.values():
            server.start()
        yield servers


def zone_around_first_fix() -> GeofenceSpec:
    """The wandering car's parking zone (see ZONE_OFFSET_M)."""
    first = fixes(WANDER)[0].fix
    east, north = ZONE_OFFSET_M
    lat = first.lat + north / METRES_PER_DEGREE
    lon = first.lon + east / (METRES_PER_DEGREE * math.cos(math.radians(first.lat)))
    return GeofenceSpec(
        name="garage",
        kind=GeofenceKind.PARKING_ZONE,
        geometry={"type": "Point", "coordinates": [lon, lat]},
        radius_m=ZONE_RADIUS_M,
    )


def park_in_zone(url: str, car: str, spec: GeofenceSpec) -> None:
    """The wandering car stood in its zone before the recording started (no enter to come)."""
    with psycopg.connect(url) as conn:
        fence = insert_geofence(conn, spec)
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        lon, lat = spec.geometry["coordinates"]
        save_geofence_states(
            conn, [GeofenceState(car, fence.id, True, an_hour_ago, None, an_hour_ago, lat, lon)]
        )


def agent_config(url: str, root: str, car: str) -> AgentConfig:
    return AgentConfig.load(
        None,
        vehicle_id=car,
        mqtt_url=url,
        topic_root=root,
        client_id=f"{root}-{car}",
        moving_interval_s=AGENT_INTERVAL_S,
        parked_interval_s=AGENT_INTERVAL_S,
        sample_interval_s=0.1,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        keepalive_s=5,
    )


@contextlib.asynccontextmanager
async def agent_on(config: AgentConfig, gpsd_port: int, car: SimCar) -> AsyncIterator[Agent]:
    source = GpsdPositionSource(port=gpsd_port, reconnect_initial_s=0.05, reconnect_max_s=0.5)
    agent = Agent(
        config,
        position=source,
        status=car,
        actuator=car,
        queue=MemoryFixQueue(config.queue_max_fixes),
    )
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def alarm_stored(url: str, car: str) -> bool:
    """Whether the hub stored the car's last fix (the alarm the test sets after the replay)."""
    return bool(query_rows(url, "SELECT 1 FROM telemetry WHERE vehicle_id = %s AND alarm", car))


def test_parked_cars_with_wandering_receivers_raise_nothing(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    receivers: dict[str, Any],
    gpsds: dict[str, Any],
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    ids = {tag: f"{root}-{tag}" for tag in CARS}
    seed_vehicles(url, list(ids.values()))
    park_in_zone(url, ids["wander"], zone_around_first_fix())
    settings = hub_settings(devstack, database_url=url, redis_url=redis_url, root=root)

    async def drive() -> None:
        async with contextlib.AsyncExitStack() as stack:
            cars: dict[str, SimCar] = {}
            for tag, name in CARS.items():
                first = fixes(name)[0].fix
                # Locked, engine off: parked, as the agent's status source says.
                cars[tag] = SimCar(lat=first.lat, lon=first.lon)
                config = agent_config(devstack.info.mqtt_url, root, ids[tag])
                await stack.enter_async_context(agent_on(config, gpsds[tag].port, cars[tag]))
            await asyncio.gather(
                *(replay(receivers[tag]._master, nmea_cycles(name)) for tag, name in CARS.items())
            )
            # A last, distinct fix: once it is stored, every fix before it is.
            for car in cars.values():
                car.update(alarm=True)
            await asyncio.to_thread(
                wait_until,
                lambda: all(alarm_stored(url, car) for car in ids.values()),
                what="the last fix of every car",
                timeout=WAIT_S,
            )

    with running_hub(settings):
        asyncio.run(drive())

    stored = query_rows(
        url,
        "SELECT vehicle_id, count(*) FROM telemetry"
        " WHERE vehicle_id LIKE %s AND lat IS NOT NULL GROUP BY vehicle_id",
        f"{root}-%",
    )
    # Every recording gave the hub positions to judge (gpsd's first fixes and the rest).
    assert {car for car, count in stored if count >= 2} == set(ids.values()), stored
    with psycopg.connect(url) as conn:
        parked = parked_vehicles(conn, list(ids.values()))
    for car in ids.values():
        rows = query_rows(
            url,
            "SELECT lat, lon, extra FROM telemetry WHERE vehicle_id = %s AND lat IS NOT NULL",
            car,
        )
        # Stored, and shown live, at one point: where the car parked.
        [held] = {(lat, lon) for lat, lon, _ in rows}
        assert query_rows(url, "SELECT lat, lon FROM vehicle_state WHERE vehicle_id = %s", car) == [
            held
        ]
        assert (parked[car].lat, parked[car].lon) == held
    # While the hub heard the wander, kept beside each fix.
    raw = [
        e["_hub"]["raw"]
        for *_, e in query_rows(
            url,
            "SELECT extra FROM telemetry WHERE vehicle_id = %s AND extra ? '_hub'",
            ids["wander"],
        )
    ]
    lat, lon = parked[ids["wander"]].lat, parked[ids["wander"]].lon
    assert (
        max(distance_m(lat, lon, r["lat"], r["lon"]) for r in raw if r["lat"] is not None) > 100.0
    )
    events = query_rows(
        url,
        "SELECT vehicle_id, kind, details FROM events WHERE vehicle_id LIKE %s AND kind = ANY(%s)",
        f"{root}-%",
        list(FORBIDDEN),
    )
    assert events == [], events
    commands = query_rows(
        url, "SELECT vehicle_id, action FROM vehicle_commands WHERE vehicle_id LIKE %s", f"{root}-%"
    )
    assert commands == [], commands
