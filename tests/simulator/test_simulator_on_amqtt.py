"""The simulator on the embedded broker (amqtt) after a long test session has used it.

A test session's broker keeps what earlier tests left: every car's retained status and,
since agents use persistent sessions, every car's subscription. amqtt 0.12 replayed, on
every CONNECT, the retained messages matching every filter of every session in the broker,
to the connecting client: messages it never asked for, at a cost of filters x retained
messages per CONNECT. Late in a session, cars then timed out connecting (the
`test_summary_counts_match_what_the_broker_delivered[session]` failure on a Python-only
machine).
"""

from __future__ import annotations

import json
import subprocess
import threading
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sim_testing import WAIT_S, sim_command, sim_env

from protocol.broker_url import BrokerUrl

if TYPE_CHECKING:
    from devstack.stack import DevStack

# What a long session leaves behind: retained statuses and persistent subscriptions of
# cars long gone (a full `make test` leaves more of both).
RETAINED_LEFT_BEHIND = 3_000
SUBSCRIPTIONS_LEFT_BEHIND = 200
RUN_TIMEOUT_S = 90.0


class Client:
    """A paho client that records every message it receives."""

    def __init__(self, url: str, client_id: str, *, clean_session: bool = True) -> None:
        broker = BrokerUrl.parse(url)
        self.received: list[str] = []
        self._lock = threading.Lock()
        self._echo = threading.Event()
        self._echo_topic = f"{client_id}/echo"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
        )
        self.client.username_pw_set(broker.username, broker.password)
        self.client.on_message = self._on_message
        self._subacks: set[int] = set()
        self._suback = threading.Condition()
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._echo_topic:
            self._echo.set()
            return
        with self._lock:
            self.received.append(message.topic)

    def _on_subscribe(self, _client: object, _userdata: object, mid: int, *_rest: object) -> None:
        with self._suback:
            self._subacks.add(mid)
            self._suback.notify_all()

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK (it may come before this call returns)."""
        result, mid = self.client.subscribe(topic_filter, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS
        with self._suback:
            acked = self._suback.wait_for(lambda: mid in self._subacks, WAIT_S)
        assert acked, f"no SUBACK for {topic_filter}"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the PUBACK."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()

    def round_trip(self) -> None:
        """Send ourselves a message and wait for it: whatever came before has arrived."""
        self.subscribe(self._echo_topic)
        self.publish(self._echo_topic, b"echo")
        assert self._echo.wait(WAIT_S), "our own message never came back"

    def close(self) -> None:
        """Disconnect (the session stays in the broker if it is persistent)."""
        self.client.disconnect()
        self.client.loop_stop()


def test_a_client_gets_no_retained_message_of_a_topic_it_never_subscribed(
    embedded_stack: DevStack, mqtt_topic_root: str
) -> None:
    url = embedded_stack.info.mqtt_url
    root = mqtt_topic_root
    # Another client's persistent subscription, and a retained message matching it.
    watcher = Client(url, f"{root}-watcher", clean_session=False)
    watcher.subscribe(f"{root}/+/status")
    watcher.close()
    publisher = Client(url, f"{root}-publisher")
    publisher.publish(f"{root}/car1/status", b'{"online": true}', retain=True)
    publisher.close()

    newcomer = Client(url, f"{root}-newcomer")
    try:
        # The broker replays retained messages before it reads the newcomer's packets, so
        # anything it wrongly sends arrives before our own message comes back.
        newcomer.round_trip()
        assert newcomer.received == []
    finally:
        newcomer.close()


def test_cars_connect_cleanly_to_an_amqtt_a_long_session_has_filled(
    embedded_stack: DevStack, mqtt_topic_root: str
) -> None:
    url = embedded_stack.info.mqtt_url
    root = mqtt_topic_root
    filler = Client(url, f"{root}-filler")
    try:
        for n in range(RETAINED_LEFT_BEHIND):
            # QoS 1, one at a time: each is stored before the next is sent.
            filler.publish(f"{root}old/car{n}/status", b'{"online": false}', retain=True)
    finally:
        filler.close()
    for n in range(SUBSCRIPTIONS_LEFT_BEHIND):
        gone = Client(url, f"{root}-gone{n}", clean_session=False)
        gone.subscribe(f"{root}old/car{n}/cmd")
        gone.close()

    args = [
        "--vehicles", "50", "--duration", "5", "--json", "--topic-root", root,
        "--client-prefix", f"{root}-", "--progress-interval", "0",
    ]  # fmt: skip
    done = subprocess.run(
        sim_command(*args),
        env=sim_env(url),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["error_messages"] == {}
    assert summary["max_connected"] == 50
    assert summary["backlog_at_exit"] == 0
