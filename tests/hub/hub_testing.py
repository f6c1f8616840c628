"""Helpers for the hub tests: fixes, a bounded-window publisher, hubs in-process and as processes.

Every wait is bounded (poll until a condition holds or a timeout passes); nothing sleeps in
the hope that something has happened.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from hub.service import Hub
from hub.settings import HubSettings
from protocol.broker_url import BrokerUrl
from protocol.stored import decode_stored
from protocol.telemetry import Telemetry, encode_telemetry
from protocol.topics import Topic

if TYPE_CHECKING:
    import signal
    from collections.abc import Callable, Iterator, Sequence
    from types import ModuleType

    from devstack.stack import DevStack
    from protocol.stored import Stored

# Generous: a loaded CI machine is slow, but a hub that takes this long is broken.
WAIT_S = 30.0


def wait_until(
    predicate: Callable[[], object], *, what: str, timeout: float = WAIT_S, interval: float = 0.02
) -> None:
    """Poll `predicate` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def now_ms() -> int:
    return int(time.time() * 1000)


def make_fix(seq: int, ts: int, **changes: Any) -> Telemetry:
    """A plausible fix in central Shanghai; override any field with keywords."""
    fields: dict[str, Any] = {
        "seq": seq,
        "ts": ts,
        "lat": 31.2304,
        "lon": 121.4737,
        "speed_kmh": 30.0,
        "heading": 90.0,
        "odometer_km": 1000.0,
        "fuel_pct": 50.0,
        "locked": False,
        "doors_open": False,
        "engine_on": True,
        "accuracy_m": 5.0,
    }
    fields.update(changes)
    return Telemetry(**fields)


class Publisher:
    """A paho MQTT 3.1.1 QoS 1 publisher that keeps at most `window` messages unacknowledged."""

    def __init__(self, url: str, client_id: str, *, window: int = 500) -> None:
        broker = BrokerUrl.parse(url)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        self._window = threading.BoundedSemaphore(window)
        self._size = window
        self._client.on_publish = lambda *_: self._window.release()
        connected = threading.Event()
        self._client.on_connect = lambda *_: connected.set()
        self._client.connect(broker.host, broker.port, keepalive=30)
        self._client.loop_start()
        assert connected.wait(WAIT_S), "publisher could not connect"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1, waiting while the window of unacknowledged messages is full."""
        assert self._window.acquire(timeout=WAIT_S), "broker stopped acknowledging"
        self._client.publish(topic, payload, qos=1, retain=retain)

    def flush(self) -> None:
        """Wait until the broker has acknowledged everything published."""
        for _ in range(self._size):
            assert self._window.acquire(timeout=WAIT_S), "broker stopped acknowledging"
        for _ in range(self._size):
            self._window.release()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def hub_settings(
    stack: DevStack,
    *,
    database_url: str,
    redis_url: str,
    root: str,
    name: str = "hub",
    **overrides: Any,
) -> HubSettings:
    """Settings for a test hub: its own topic root and client id; quick batches and sweeps."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "mqtt_url": stack.info.mqtt_url,
        "mqtt_shared_subscriptions": stack.info.mqtt_shared_subscriptions,
        "topic_root": root,
        "hub_client_id": f"{root}-{name}",
        "hub_batch_max_delay_ms": 50,
        "hub_stop_grace_s": 5.0,
    }
    values.update(overrides)
    return HubSettings(**values)


@contextlib.contextmanager
def running_hub(settings: HubSettings) -> Iterator[Hub]:
    """An in-process hub, subscribed before the block starts, shut down after it."""
    hub = Hub(settings)
    with hub:
        assert hub.consumer.wait_connected(WAIT_S), "hub did not subscribe"
        yield hub


def hub_env(settings: HubSettings) -> dict[str, str]:
    """The environment a `freecar hub` process needs for these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    env.update(
        {
            "FREECAR_DATABASE_URL": settings.database_url.get_secret_value(),
            "FREECAR_REDIS_URL": settings.redis_url.get_secret_value(),
            "FREECAR_MQTT_URL": settings.mqtt_url.get_secret_value(),
            "FREECAR_MQTT_SHARED_SUBSCRIPTIONS": str(settings.mqtt_shared_subscriptions).lower(),
            "FREECAR_TOPIC_ROOT": settings.topic_root,
            "FREECAR_HUB_CLIENT_ID": settings.hub_client_id,
            "FREECAR_HUB_BATCH_MAX_DELAY_MS": str(settings.hub_batch_max_delay_ms),
            "FREECAR_HUB_STOP_GRACE_S": str(settings.hub_stop_grace_s),
        }
    )
    return env


class HubProcess:
    """`freecar hub` as a child process, its log in a file; killed at teardown if still alive."""

    def __init__(self, settings: HubSettings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self._log_offset = 0
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> HubProcess:
        """Start the process and wait until it has subscribed."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "freecar", "hub"],
                env=hub_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: "subscribed to" in self.log() or self.exited(),
            what="the hub process to subscribe",
        )
        assert not self.exited(), f"hub exited early:\n{self.log()}"
        return self

    def log(self) -> str:
        """What this run of the process has logged so far."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def exited(self) -> bool:
        return self.popen is not None and self.popen.poll() is not None

    def signal(self, signum: signal.Signals) -> int:
        """Send a signal and return the exit code once the process is gone."""
        assert self.popen is not None
        self.popen.send_signal(signum)
        return self.popen.wait(timeout=WAIT_S)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=WAIT_S)


def seed_vehicles(database_url: str, vehicle_ids: Sequence[str]) -> None:
    """Put vehicles in the inventory (vehicle_state refers to it)."""
    with psycopg.connect(database_url) as conn:
        for number, vehicle_id in enumerate(vehicle_ids):
            conn.execute(
                "INSERT INTO vehicles (id, plate, make, model, category, fuel_type,"
                " price_hour_minor, price_day_minor, currency)"
                " VALUES (%s, %s, 'Test', 'Car', 'standard', 'petrol', 1000, 9000, 'EUR')"
                " ON CONFLICT (id) DO NOTHING",
                (vehicle_id, f"{vehicle_id}-{number}"),
            )


# About 300 m north: well past the 150 m (plus accuracy) a parked car's GPS may drift.
METRES_300_LAT = 0.0027
# A tow in town: 50 m further every 5 s (36 km/h).
TOW_STEP_LAT = 0.00045
TOW_STEP_MS = 5_000


def publish_theft(pub: Publisher, car: str, root: str) -> None:
    """A locked, parked car, then the same car towed away: 300 m off a minute later, and on.

    The hub needs three fixes in a row beyond a parked car's drift, over 9 s, to believe it
    moves (hub/parking.py): the tow gives four, 5 s apart.
    """
    topic = Topic.telemetry(car, root=root).value
    start = now_ms() - 90_000
    parked = {"locked": True, "engine_on": False, "speed_kmh": 0.0}
    pub.publish(topic, encode_telemetry(make_fix(1, start, **parked)))
    pub.publish(topic, encode_telemetry(make_fix(2, start + 30_000, **parked)))
    for step in range(4):
        lat = 31.2304 + METRES_300_LAT + step * TOW_STEP_LAT
        moved = make_fix(3 + step, start + 60_000 + step * TOW_STEP_MS, lat=lat, **parked)
        pub.publish(topic, encode_telemetry(moved))
    pub.flush()


def query_rows(database_url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of one query, on a connection of its own."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def telemetry_count(database_url: str, root: str) -> tuple[int, int]:
    """(rows, distinct (vehicle, ts)) stored for vehicles whose id starts with `root`."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (vehicle_id, ts)) FROM telemetry"
            " WHERE vehicle_id LIKE %s",
            (f"{root}%",),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def worker_testing() -> ModuleType:
    """tests/worker/worker_testing.py (SMTP server, webhook receiver), loaded by path.

    Test directories are not packages; loading it by path shares the worker tests' helpers
    rather than copying them.
    """
    name = "worker_testing"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "worker" / "worker_testing.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class StoredWords:
    """Every storage acknowledgement published under `{root}/+/stored`, decoded, by vehicle.

    `on_word` runs on paho's thread as each arrives (say, to look at the database then).
    """

    def __init__(
        self, url: str, root: str, *, on_word: Callable[[str, Stored], None] | None = None
    ) -> None:
        broker = BrokerUrl.parse(url)
        self._root = root
        self.words: list[tuple[str, Stored, bool]] = []
        self._on_word = on_word
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{root}-stored", protocol=mqtt.MQTTv311
        )
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect(broker.host, broker.port, keepalive=30)
        self._client.loop_start()
        self._client.subscribe(f"{root}/+/stored", 1)
        assert subscribed.wait(WAIT_S), "no SUBACK for the stored topics"

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if message.topic.rsplit("/", 2)[0] != self._root or parts[-1] != "stored":
            return  # amqtt now and then delivers a retained message of another topic
        vehicle_id = parts[-2]
        word = decode_stored(bytes(message.payload))
        if self._on_word is not None:
            self._on_word(vehicle_id, word)
        with self._lock:
            self.words.append((vehicle_id, word, bool(message.retain)))

    def of(self, vehicle_id: str) -> list[Stored]:
        """The words heard for one vehicle, in order."""
        with self._lock:
            return [word for vid, word, _ in self.words if vid == vehicle_id]

    def next_seq(self, vehicle_id: str) -> int | None:
        """The latest `next_seq` heard for one vehicle."""
        words = self.of(vehicle_id)
        return words[-1].next_seq if words else None

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
