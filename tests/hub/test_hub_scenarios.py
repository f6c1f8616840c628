"""The simulator's scenarios end to end: simulator -> broker -> hub -> events -> worker -> ops.

Five `freecar sim` processes (leave-service-area, theft, door-ajar, low-fuel, offline-burst)
drive small fleets at once on one topic root, each with its own vehicle ids, on a street grid
whose box is also the service area stored in the database. One in-process hub evaluates
everything (a quick silence sweep); a Celery worker thread sends the notifications to an
aiosmtpd server and a local webhook receiver. Each scenario must raise exactly its events,
once, for exactly the cars the scenario picked (`simulator.scenarios` says which, from the
seed), every notified event must reach both ops channels, and the theft's rule command must
go out. Running the five together keeps the whole under about 90 s: each scenario's events
come within its first minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import psycopg
import pytest
from celery.contrib.testing.worker import start_worker  # type: ignore[import-untyped]
from hub_testing import hub_settings, running_hub, seed_vehicles, wait_until, worker_testing

import worker.notifications.tasks  # noqa: F401 - registers the tasks
from db.geofences.model import GeofenceKind, GeofenceSpec
from db.geofences.repository import insert_geofence
from simulator import scenarios
from worker.app import create_celery

if TYPE_CHECKING:
    from pathlib import Path

    from celery import Celery

    from devstack.stack import DevStack


wt = worker_testing()

# About 1.1 x 1.1 km of central Shanghai: a grid of a few streets (one every 400 m), the
# smallest with roads wholly inside it, so a car sent outside the box (to the grid's edge,
# 10 % beyond it) gets there within a minute or so.
BOX: Final = (121.468, 31.225, 121.480, 31.235)
CARS: Final = 3  # each scenario picks at least one; the others show normal stays quiet
SEED: Final = 1
# With this seed the leaver sets off at once and is outside the box about 54 s in, the
# quickest of the first 80 seeds (a route out of a grid with lights takes most of a minute);
# with seed 1 it would still be on its way after 90 s.
SEEDS: Final = {scenarios.LEAVE_SERVICE_AREA: 32}
# Long enough for every scenario's events (offline-burst's link returns at 45 s) with room
# for a slow start; the test stops the simulators as soon as it has seen what it needs.
SIM_DURATION_S: Final = 85
WAIT_EVENTS_S: Final = 75.0
# Kinds a scenario may raise; geofence_enter/exit and idle have no channel and are the
# engine's own business (tests/hub/test_hub_geofence_*.py), not the scenarios'.
WATCHED: Final = (
    "left_service_area",
    "entered_restricted",
    "moving_while_locked",
    "door_open_while_locked",
    "low_fuel",
    "low_battery",
    "overspeed",
    "offline",
    "online",
    "command_failed",
    "engine_on_without_trip",
)
# engine_on_without_trip fires for every car that drives (there are no trips yet), so it is
# watched only to be left out of the comparison below.
IGNORED_BY_ALL: Final = frozenset({"engine_on_without_trip"})
TAGS: Final = {
    scenarios.LEAVE_SERVICE_AREA: "lv",
    scenarios.THEFT: "th",
    scenarios.DOOR_AJAR: "da",
    scenarios.LOW_FUEL: "lf",
    scenarios.OFFLINE_BURST: "ob",
}


@pytest.fixture
def worker_app(migrated_database_url: str, redis_url: str, smtp: Any, webhook: Any) -> Celery:
    app = create_celery(
        wt.worker_settings(migrated_database_url, redis_url, smtp=smtp, webhook=webhook)
    )
    app.conf.worker_hijack_root_logger = False
    return app


def vehicle_ids(root: str, scenario: str) -> list[str]:
    return [f"{root}-{TAGS[scenario]}-{n:02d}" for n in range(1, CARS + 1)]


def expected_events(root: str, scenario: str) -> dict[str, Counter[str]]:
    """Per vehicle of the scenario, the watched events it must raise (once each)."""
    ids = vehicle_ids(root, scenario)
    seed = SEEDS.get(scenario, SEED)
    expected: dict[str, Counter[str]] = {vehicle: Counter() for vehicle in ids}
    if scenario == scenarios.OFFLINE_BURST:
        # The first burst: down at 15 s, up at 45 s; the next is at 135 s, after the test.
        for _when, index, up in scenarios.NetworkSchedule(scenario, CARS, seed).due(50.0):
            expected[ids[index]]["online" if up else "offline"] += 1
        return expected
    for index, role in enumerate(scenarios.assign_roles(scenario, CARS, seed)):
        if role.leave_after_s is not None:
            expected[ids[index]]["left_service_area"] += 1
        if role.theft_at_s is not None:
            expected[ids[index]]["moving_while_locked"] += 1
        if role.door_ajar:
            expected[ids[index]]["door_open_while_locked"] += 1
        if role.low_fuel:
            # Filled in from the car's own fixes: petrol, electric or both (see below).
            expected[ids[index]]["low_energy"] += 1
    return expected


def _rows(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def raised(url: str, root: str) -> dict[str, Counter[str]]:
    """Watched events stored so far, per vehicle of this run."""
    found: dict[str, Counter[str]] = {}
    for vehicle, kind in _rows(
        url,
        "SELECT vehicle_id, kind FROM events WHERE vehicle_id LIKE %s AND kind = ANY(%s)",
        f"{root}-%",
        list(WATCHED),
    ):
        if kind not in IGNORED_BY_ALL:
            found.setdefault(vehicle, Counter())[kind] += 1
    return found


def energy_kinds(url: str, vehicle: str) -> Counter[str]:
    """low_fuel and/or low_battery, by what the car reports (petrol, electric, hybrid)."""
    [(fuel, battery)] = _rows(
        url,
        "SELECT bool_or(fuel_pct IS NOT NULL), bool_or(battery_pct IS NOT NULL)"
        " FROM telemetry WHERE vehicle_id = %s",
        vehicle,
    )
    return Counter(({"low_fuel": 1} if fuel else {}) | ({"low_battery": 1} if battery else {}))


def start_sim(stack: DevStack, root: str, scenario: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "freecar", "sim",
        "--vehicles", str(CARS),
        "--area", ",".join(str(v) for v in BOX),
        "--scenario", scenario,
        "--seed", str(SEEDS.get(scenario, SEED)),
        "--id-format", f"{root}-{TAGS[scenario]}-{{n:02d}}",
        "--topic-root", root,
        "--client-prefix", f"{root}-",
        "--mqtt-url", stack.info.mqtt_url,
        # Every car, parked or driving, reports each second: the hub's silence sweep (8 s)
        # then never takes a parked car for a silent one.
        "--rate", "1",
        "--parked-rate", "1",
        "--duration", str(SIM_DURATION_S),
        "--memory-queue",
        "--progress-interval", "0",
        "--drain-timeout", "2",
        "--json",
    ]  # fmt: skip
    # stdout carries only the JSON summary; progress and errors go to stderr.
    with log.with_suffix(".json").open("wb") as out, log.open("wb") as err:
        return subprocess.Popen(command, stdout=out, stderr=err)


def running(sims: list[subprocess.Popen[bytes]], logs: Path) -> bool:
    """True while every simulator runs; fails at once, with its output, if one exited."""
    for sim in sims:
        if sim.poll() is not None:
            output = "\n".join(log.read_text()[-2000:] for log in sorted(logs.glob("*.log")))
            raise AssertionError(f"a simulator exited early ({sim.returncode}):\n{output}")
    return True


def reported(sims: list[subprocess.Popen[bytes]], logs: Path, url: str, vehicle: str) -> bool:
    """Whether the car's fixes are in, so its kind of energy is known."""
    return running(sims, logs) and bool(energy_kinds(url, vehicle))


def stop_sims(sims: list[subprocess.Popen[bytes]]) -> None:
    for sim in sims:
        if sim.poll() is None:
            sim.terminate()
    for sim in sims:
        try:
            sim.wait(timeout=15)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(timeout=5)


def check_notified(url: str, event_id: int, smtp: Any, webhook: Any) -> None:
    wait_until(
        lambda: (
            webhook.for_event(event_id)
            and all(
                any(m["X-FreeCar-Event-Id"] == str(event_id) for m in smtp.to(a))
                for a in wt.OPS_EMAILS
            )
        ),
        what=f"the email and the webhook of event {event_id}",
    )
    wait_until(lambda: wt.notified(url, event_id), what=f"event {event_id} marked notified")
    [delivery] = webhook.for_event(event_id)
    assert delivery.genuine


def test_each_scenario_raises_its_events_once_and_ops_are_told(  # noqa: PLR0917 - fixtures
    devstack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    smtp: Any,
    webhook: Any,
    worker_app: Celery,
    tmp_path: Path,
) -> None:
    url, root = migrated_database_url, mqtt_topic_root
    minlon, minlat, maxlon, maxlat = BOX
    ring = [
        [minlon, minlat],
        [maxlon, minlat],
        [maxlon, maxlat],
        [minlon, maxlat],
        [minlon, minlat],
    ]
    with psycopg.connect(url) as conn:
        insert_geofence(
            conn,
            GeofenceSpec(
                name="test box",
                kind=GeofenceKind.SERVICE_AREA,
                geometry={"type": "Polygon", "coordinates": [ring]},
            ),
        )
    expected: dict[str, Counter[str]] = {}
    for scenario in TAGS:
        seed_vehicles(url, vehicle_ids(root, scenario))
        expected |= expected_events(root, scenario)
    settings = hub_settings(
        devstack,
        database_url=url,
        redis_url=redis_url,
        root=root,
        hub_silence_timeout_s=8.0,
        hub_sweep_interval_s=1.0,
    )
    sims: list[subprocess.Popen[bytes]] = []
    with (
        running_hub(settings),
        start_worker(worker_app, perform_ping_check=False, shutdown_timeout=30),
    ):
        try:
            sims = [
                start_sim(devstack, root, scenario, tmp_path / f"{TAGS[scenario]}.log")
                for scenario in TAGS
            ]
            for vehicle, kinds in expected.items():
                if kinds.pop("low_energy", 0):
                    wait_until(
                        partial(reported, sims, tmp_path, url, vehicle),
                        what=f"{vehicle}'s telemetry",
                        timeout=WAIT_EVENTS_S,
                    )
                    kinds.update(energy_kinds(url, vehicle))
            wanted = {v: k for v, k in expected.items() if k}
            try:
                wait_until(
                    lambda: (
                        running(sims, tmp_path)
                        and all(raised(url, root).get(v, Counter()) >= k for v, k in wanted.items())
                    ),
                    what=f"the scenarios' events {wanted}",
                    timeout=WAIT_EVENTS_S,
                    interval=0.5,
                )
            except AssertionError as error:
                raise AssertionError(f"{error}; raised: {raised(url, root)}") from None
            events = _rows(
                url,
                "SELECT id, vehicle_id, kind FROM events WHERE vehicle_id LIKE %s"
                " AND kind = ANY(%s) ORDER BY id",
                f"{root}-%",
                list(WATCHED),
            )
            # Theft: the rule's immobilize command, issued and sent by the hub.
            [thief] = [v for v, k in expected.items() if k["moving_while_locked"]]
            [theft_event] = [i for i, v, k in events if v == thief and k == "moving_while_locked"]
            wait_until(
                lambda: _rows(
                    url,
                    "SELECT 1 FROM vehicle_commands WHERE vehicle_id = %s AND status <> 'queued'",
                    thief,
                ),
                what="the immobilize command sent",
            )
            assert _rows(
                url,
                "SELECT action, issued_by, correlation_id FROM vehicle_commands"
                " WHERE vehicle_id = %s",
                thief,
            ) == [("immobilize", "rule:moving_while_locked", f"event:{theft_event}")]
            for event_id, _vehicle, kind in events:
                if kind not in {"online", *IGNORED_BY_ALL}:  # online has no channel
                    check_notified(url, event_id, smtp, webhook)
            # Exactly the expected events, once each: nothing for the cars the scenarios
            # left alone, nothing twice, nothing else.
            assert raised(url, root) == {v: k for v, k in expected.items() if k}
        finally:
            stop_sims(sims)
    for out in sorted(tmp_path.glob("*.json")):
        summary = json.loads(out.read_text())
        assert summary["agents_crashed"] == 0, out.with_suffix(".log").read_text()
