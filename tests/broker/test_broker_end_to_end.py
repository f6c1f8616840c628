"""A car under its own id still works end to end once every login is bound to its client id.

Everything as an operator sets it up: `freecar vehicle broker-setup --hub ID` makes the hub's
bound login, `freecar vehicle provision` issues the car's and writes its agent config (whose
client id is the vehicle id by default), a real hub stores the car's telemetry, and an unlock
command goes from the database through the hub to the real agent and comes back confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from db.commands import CommandStatus, issue_command, wait_for_command
from freecar.cli import main
from hub.service import Hub
from hub.settings import HubSettings
from protocol.broker_url import BrokerUrl
from protocol.commands import Action
from protocol.keys import SigningKey
from vehicle_agent.agent import Agent
from vehicle_agent.backends.sim import SimCar
from vehicle_agent.config import AgentConfig
from vehicle_agent.queue import MemoryFixQueue

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from devstack.stack import DevStack

# Generous: a loaded CI machine is slow, but nothing here should take this long.
WAIT_S = 30.0
# Agent intervals fast enough that a fix and a confirmation follow within a second.
FAST_AGENT: dict[str, Any] = {
    "parked_interval_s": 0.2,
    "moving_interval_s": 0.2,
    "sample_interval_s": 0.05,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "keepalive_s": 5,
}


def _wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_S:.0f} s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def _running_agent(config: AgentConfig, car: SimCar) -> Iterator[None]:
    """The real agent on its own thread and event loop, cancelled after the block."""
    agent = Agent(
        config, position=car, status=car, actuator=car, queue=MemoryFixQueue(config.queue_max_fixes)
    )

    async def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await agent.run()

    loop = asyncio.new_event_loop()
    task = loop.create_task(run())
    thread = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(WAIT_S)
        loop.close()


def _insert_vehicle(database_url: str, vehicle_id: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO vehicles (id, plate, make, model, category, fuel_type,"
            " price_hour_minor, price_day_minor, currency)"
            " VALUES (%s, %s, 'BYD', 'Han', 'standard', 'electric', 1000, 9000, 'CNY')",
            (vehicle_id, f"P-{vehicle_id}"),
        )


def _stored_fixes(database_url: str, vehicle_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM telemetry WHERE vehicle_id = %s", (vehicle_id,)
        ).fetchone()
    return 0 if row is None else int(row[0])


def test_a_car_with_its_own_id_works_end_to_end(  # noqa: PLR0917 - fixtures
    dynsec_stack: DevStack,
    migrated_database_url: str,
    redis_url: str,
    mqtt_topic_root: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    root, database_url, key = mqtt_topic_root, migrated_database_url, SigningKey.generate()
    vehicle_id, hub_id = f"{root}-car", f"{root}-hub-1"
    broker = BrokerUrl.parse(dynsec_stack.info.mqtt_url)
    hub_url = f"mqtt://{hub_id}:{secrets.token_hex(16)}@{broker.host}:{broker.port}"
    for name, value in {
        "FREECAR_DATABASE_URL": database_url,
        "FREECAR_MQTT_URL": hub_url,
        "FREECAR_MQTT_ADMIN_URL": dynsec_stack.info.mqtt_admin_url,
        "FREECAR_TOPIC_ROOT": root,
        "FREECAR_HUB_SIGNING_KEY": key.to_paserk(),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FREECAR_FLEET_AGENT_MQTT_URL", raising=False)
    monkeypatch.delenv("FREECAR_HUB_SIGNING_KEY_FILE", raising=False)
    _insert_vehicle(database_url, vehicle_id)
    assert main(["vehicle", "broker-setup", "--hub", hub_id]) == 0
    agent_toml = tmp_path / "agent.toml"
    assert main(["vehicle", "provision", vehicle_id, "--out", str(agent_toml)]) == 0
    config = AgentConfig.load(agent_toml, **FAST_AGENT)
    assert config.mqtt_client_id == vehicle_id  # nothing to configure: the login's own id

    settings = HubSettings(
        database_url=database_url,
        redis_url=redis_url,
        mqtt_url=hub_url,
        mqtt_shared_subscriptions=True,
        topic_root=root,
        hub_client_id=hub_id,
        hub_batch_max_delay_ms=50,
        hub_stop_grace_s=5.0,
        hub_signing_key=key.to_paserk(),
        hub_command_sweep_s=0.2,
    )
    car = SimCar(lat=31.2304, lon=121.4737, heading=90.0, locked=True)
    with Hub(settings) as hub, _running_agent(config, car):
        assert hub.consumer.wait_connected(WAIT_S), "the hub's bound login did not get in"
        _wait_until(lambda: _stored_fixes(database_url, vehicle_id) > 0, "the car's fixes")
        with psycopg.connect(database_url, autocommit=True) as conn:
            queued = issue_command(conn, vehicle_id, Action.UNLOCK, issued_by="test")
            done = wait_for_command(conn, queued.id, timeout_s=WAIT_S)
        assert done.status == CommandStatus.CONFIRMED, done
        assert car.status().locked is False
        assert done.sent_by == hub_id
