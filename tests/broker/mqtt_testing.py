"""A small paho client for broker tests: connect, subscribe, publish, collect; bounded waits."""

from __future__ import annotations

import queue
import secrets
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocol.broker_url import BrokerUrl

# Loopback broker: everything answers in milliseconds; this only bounds a failure.
WAIT_S = 5.0


class MqttProbe:
    """A paho MQTT 3.1.1 client on its own network thread, recording what it receives.

    The client id defaults to the `username` given, since a login bound to its client id
    connects only under its own name; without a username (the URL's login, the devstack's
    unbound service login) it is random.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        clean_session: bool = True,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        broker = BrokerUrl.parse(url)
        self.host, self.port = broker.host, broker.port
        if client_id is None:
            client_id = username or f"test-{secrets.token_hex(5)}"
        self.client_id = client_id
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        user = username if username is not None else broker.username
        pw = password if password is not None else broker.password
        if user is not None:
            self.client.username_pw_set(user, pw)
        if will is not None:
            # Retained, like the agent's own `offline` will on its status topic.
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: int | None = None
        self.session_present: bool | None = None
        self.disconnects = 0
        self._dropped = False
        self._connected = threading.Event()
        self._subacks: dict[int, tuple[threading.Event, list[int]]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.connack = int(reason.value)
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        self.disconnects += 1

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put((msg.topic, msg.payload))

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: Any, _p: Any) -> None:
        entry = self._subacks.get(mid)
        if entry is not None:
            entry[1].extend(int(reason.value) for reason in reasons)
            entry[0].set()

    def connect(self) -> int:
        """Connect and return the CONNACK code (0 accepted)."""
        # paho stops retrying after a refused CONNACK only if told: no reconnect here.
        self.client.reconnect_delay_set(60, 60)
        self._connected.clear()
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(WAIT_S), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1 and return the SUBACK code (0-2 granted, 128 refused)."""
        event = threading.Event()
        granted: list[int] = []
        result, mid = self.client.subscribe(topic, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS
        self._subacks[mid] = (event, granted)
        # The SUBACK may have arrived before the mid was registered: paho calls back from
        # its own thread. Resubscribing is idempotent, so one retry covers that race.
        if not event.wait(WAIT_S / 2):
            result, mid = self.client.subscribe(topic, qos=1)
            self._subacks[mid] = (event, granted)
            assert event.wait(WAIT_S), f"no SUBACK for {topic}"
        return granted[0]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the PUBACK (which a denied publish also gets)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)

    def next_message(self, timeout: float = WAIT_S) -> tuple[str, bytes]:
        """The next message received, or AssertionError after `timeout`."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message arrived") from None

    def drop(self) -> None:
        """Lose the connection without DISCONNECT, as a car whose link dies: the will fires."""
        self._dropped = True
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Disconnect cleanly (no will) and stop the network thread."""
        if self._dropped:
            return
        self.client.disconnect()
        self.client.loop_stop()
