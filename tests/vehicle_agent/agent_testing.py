"""Helpers for the agent tests: a recording subscriber, fast configs and bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol.broker_url import BrokerUrl
from vehicle_agent.agent import Agent
from vehicle_agent.backends.sim import SimCar
from vehicle_agent.config import AgentConfig
from vehicle_agent.queue import FixQueue, MemoryFixQueue

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

# Generous: a loaded CI machine is slow, but nothing here should take this long.
WAIT = 15.0
POLL = 0.02

# Intervals short enough that a test sees many fixes in a second, long enough that the
# broker and the subscriber keep up on a slow machine.
FAST = {
    "parked_interval_s": 0.1,
    "moving_interval_s": 0.1,
    "sample_interval_s": 0.05,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "keepalive_s": 5,
}


@dataclass
class Received:
    """One message a subscriber got."""

    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """A paho MQTT 3.1.1 subscriber on its own thread that records everything it receives."""

    url: str
    client_id: str
    clean_session: bool = True
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        broker = BrokerUrl.parse(self.url)
        self._broker = broker
        self._lock = threading.Lock()
        self._connacks: queue.Queue[bool] = queue.Queue()
        self._subacks: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self.clean_session,
            protocol=mqtt.MQTTv311,
        )
        if broker.username is not None:
            self.client.username_pw_set(broker.username, broker.password)
        # Reconnect fast after a broker restart; the tests wait for what arrives.
        # paho annotates these as int, but its timing is float arithmetic throughout.
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)  # type: ignore[arg-type]
        self.client.on_connect = lambda _c, _u, _f, code, _p: self._connacks.put(
            not code.is_failure
        )
        self.client.on_subscribe = lambda _c, _u, mid, _codes, _p: self._subacks.put(mid)
        self.client.on_message = self._on_message
        self._started = False

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Received(message.topic, bytes(message.payload), bool(message.retain))
            )

    def start(self, *topics: str) -> Subscriber:
        """Connect, subscribe at QoS 1 and wait for the SUBACKs."""
        self.client.connect(self._broker.host, self._broker.port, keepalive=5)
        self.client.loop_start()
        self._started = True
        assert self._connacks.get(timeout=WAIT), "subscriber refused by the broker"
        for topic in topics:
            _, mid = self.client.subscribe(topic, 1)
            while self._subacks.get(timeout=WAIT) != mid:
                pass
        return self

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published()

    def on(self, topic: str) -> list[Received]:
        """The messages received so far on one topic."""
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def fixes(self, topic: str) -> list[dict[str, Any]]:
        """Every fix received on a telemetry topic, arrays flattened, in arrival order."""
        found: list[dict[str, Any]] = []
        for message in self.on(topic):
            body = message.json()
            found.extend(body if isinstance(body, list) else [body])
        return found

    def seqs(self, topic: str) -> set[int]:
        """The distinct `seq` values received on a telemetry topic."""
        return {fix["seq"] for fix in self.fixes(topic)}

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False


def fast_config(url: str, root: str, vehicle_id: str = "car-1", **overrides: Any) -> AgentConfig:
    """An AgentConfig with test-speed intervals; the client id is unique to the test."""
    values: dict[str, Any] = {
        "vehicle_id": vehicle_id,
        "mqtt_url": url,
        "topic_root": root,
        "client_id": f"{root}-{vehicle_id}",
        **FAST,
        **overrides,
    }
    return AgentConfig.load(None, **values)


def parked_car(**changes: Any) -> SimCar:
    """A simulated car parked in central Shanghai."""
    return SimCar(**{"lat": 31.2304, "lon": 121.4737, "heading": 90.0, **changes})


def make_agent(
    config: AgentConfig, car: SimCar | None = None, fix_queue: FixQueue | None = None
) -> tuple[Agent, SimCar]:
    """An agent on a simulated car (a parked one unless given)."""
    car = car or parked_car()
    if fix_queue is None:  # not `or`: an empty queue is falsy
        fix_queue = MemoryFixQueue(config.queue_max_fixes)
    agent = Agent(config, position=car, status=car, actuator=car, queue=fix_queue)
    return agent, car


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    """Run the agent for the duration of the block; cancel it and wait for it afterwards."""
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(condition: Callable[[], object], what: str, within: float = WAIT) -> None:
    """Poll `condition` until it is true, failing the test after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(POLL)


def wait_until(condition: Callable[[], object], what: str, within: float = WAIT) -> None:
    """The same as `eventually`, for code outside an event loop."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        time.sleep(POLL)
