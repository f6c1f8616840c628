"""Helpers for the devstack tests: a paho client whose every wait is bounded."""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol.broker_url import BrokerUrl

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from paho.mqtt.reasoncodes import ReasonCode

# Generous: a loaded CI machine is slow, but a broker that takes this long is broken.
WAIT = 10.0


class MqttClient:
    """A paho MQTT 3.1.1 client on its own network thread, with bounded waits."""

    def __init__(self, url: str, client_id: str, *, clean_session: bool = True) -> None:
        self.broker = BrokerUrl.parse(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        if self.broker.username is not None:
            self.client.username_pw_set(self.broker.username, self.broker.password)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connacks: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: queue.Queue[tuple[int, list[ReasonCode]]] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, code, _p: self._connacks.put(code)
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self._subacks.put((mid, codes))
        self._started = False

    def connect(self) -> ReasonCode:
        """Connect and return the broker's CONNACK reason code."""
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        self._started = True
        return self._connacks.get(timeout=WAIT)

    def connected(self) -> MqttClient:
        """Connect, insisting on success."""
        code = self.connect()
        assert not code.is_failure, f"CONNACK {code}"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe and return the granted QoS once the SUBACK is in."""
        result, mid = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        while True:
            ack_mid, codes = self._subacks.get(timeout=WAIT)
            if ack_mid == mid:
                return codes[0].value

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait until the broker acknowledged it (QoS 1) or it was sent (QoS 0)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published()

    def receive(self) -> mqtt.MQTTMessage:
        """The next message, waiting at most `WAIT` seconds."""
        return self.messages.get(timeout=WAIT)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False


@pytest.fixture
def mqtt_client(mqtt_topic_root: str) -> Iterator[Callable[..., MqttClient]]:
    """Make clients named `<topic root>-<name>`; all are closed after the test."""
    made: list[MqttClient] = []

    def make(url: str, name: str, *, clean_session: bool = True) -> MqttClient:
        client = MqttClient(url, f"{mqtt_topic_root}-{name}", clean_session=clean_session)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
