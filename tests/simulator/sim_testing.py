"""Helpers for end-to-end simulator tests: a plain subscriber and the `freecar sim` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol.broker_url import BrokerUrl

if TYPE_CHECKING:
    from collections.abc import Iterator

# Bounded waits: generous for a loaded machine, short enough to fail a broken run quickly.
WAIT_S = 20.0


class Recorder:
    """Everything the broker delivers under a topic root: fixes, acks and statuses."""

    def __init__(self, url: str, root: str) -> None:
        broker = BrokerUrl.parse(url)
        self.root = root
        self.lock = threading.Lock()
        self.fixes: list[tuple[str, dict[str, Any]]] = []
        self.acks: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{root}-recorder", protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set(broker.username, broker.password)
        self._subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe([(f"{root}/+/telemetry", 1), (f"{root}/+/cmd/ack", 1)])
        assert self._subscribed.wait(WAIT_S), "no SUBACK"

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        vid = parts[-2] if parts[-1] == "telemetry" else parts[-3]
        body = json.loads(message.payload)
        with self.lock:
            if parts[-1] == "telemetry":
                self.fixes.extend(
                    (vid, fix) for fix in (body if isinstance(body, list) else [body])
                )
            else:
                self.acks.append((vid, body))

    def unique(self) -> set[tuple[str, int]]:
        """Distinct (vehicle, seq) pairs seen."""
        with self.lock:
            return {(vid, fix["seq"]) for vid, fix in self.fixes}

    def fixes_of(self, vid: str) -> list[dict[str, Any]]:
        """The fixes of one vehicle, in arrival order."""
        with self.lock:
            return [fix for v, fix in self.fixes if v == vid]

    def acks_of(self, vid: str) -> list[dict[str, Any]]:
        """The command acks of one vehicle, in arrival order."""
        with self.lock:
            return [ack for v, ack in self.acks if v == vid]

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def recorder(url: str, root: str) -> Iterator[Recorder]:
    """A Recorder for the duration of a `with` block."""
    rec = Recorder(url, root)
    try:
        yield rec
    finally:
        rec.close()


def sim_command(*args: str) -> list[str]:
    """The command line of `freecar sim` with these options."""
    return [sys.executable, "-m", "freecar", "sim", *args]


def sim_env(mqtt_url: str | None) -> dict[str, str]:
    """The environment a tester's shell would have: the broker URL and nothing of ours else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREECAR_")}
    if mqtt_url is not None:
        env["FREECAR_MQTT_URL"] = mqtt_url
    return env


@contextmanager
def running_sim(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`freecar sim` as a child process; killed if the test leaves it running."""
    process = subprocess.Popen(
        sim_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate(timeout=WAIT_S)
