"""The hub's MQTT session: a persistent, manually acknowledged subscription on one thread.

Plain paho (several times faster than aiomqtt here), driven by our own loop on one thread
(`hub-mqtt`): connect, serve the socket with `loop_read`/`loop_write`/`loop_misc`, and on
loss reconnect after a capped, jittered backoff. Every paho call happens on that thread,
so acknowledgements from the writer are queued and sent by it too: no paho state is shared
between threads, and a wake-up socket gets queued acks out at once.

The hub's publishes (signed commands, and the retained storage acknowledgements of
contract 1.1) go the same way: `publish()` queues them for the MQTT thread and returns a
`PublishTicket` that resolves when the broker acknowledges (PUBACK) or the attempt fails;
a caller that does not wait for it may pass a callback instead.

Messages are acknowledged only after the batch holding them has committed (`manual_ack`).
The session is persistent (MQTT 5: clean start off and a session expiry; 3.1.1: clean
session off), so what was not acknowledged when the hub died is redelivered when it comes
back. Each connection has a generation number; an ack is sent only on the connection its
message came on, since a packet id means nothing on a later connection (and the broker
redelivers those messages anyway).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from hub.mqtt_client import BufferedReadClient, pending_of
from hub.settings import MqttProtocol
from protocol.backoff import Backoff

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from paho.mqtt.reasoncodes import ReasonCode

    from hub.stats import HubStats
    from protocol.broker_url import BrokerUrl
    from protocol.topics import TopicFilter

log = logging.getLogger(__name__)

# Reconnect delays: the first retry is quick (a broker restart takes about a second), then
# doubling up to 30 s so a long outage costs a connection attempt now and then, not a storm.
RECONNECT_FIRST_S: Final = 0.5
RECONNECT_CAP_S: Final = 30.0
# A connection that lasted this long was a success: the next loss starts the backoff afresh.
# Shorter would let a flapping connection (say, two hubs sharing a client id and taking the
# session from each other) reconnect in a tight loop.
STABLE_CONNECTION_S: Final = 30.0
# A broker that accepted TCP but sends no CONNACK within this is not going to.
CONNACK_TIMEOUT_S: Final = 10.0
# Upper bound on one select(): keepalive pings and the stop flag are checked this often.
POLL_S: Final = 0.5
# Buffered packets handled per turn of the loop before it looks at acks, keepalive and the
# stop flag again: a fraction of a millisecond of work each.
PACKETS_PER_WAKE: Final = 256

Delivery = tuple[int, int]
"""(connection generation, packet id) of a received QoS 1 message."""


class PublishTicket:
    """The outcome of one queued publish: the broker took it, or the attempt failed."""

    __slots__ = ("_done", "_on_resolved", "accepted", "error")

    def __init__(self, on_resolved: Callable[[PublishTicket], None] | None = None) -> None:
        self._done = threading.Event()
        self._on_resolved = on_resolved
        self.accepted = False
        self.error: str | None = None

    def resolve(self, *, accepted: bool, error: str | None = None) -> None:
        """Record the outcome (on the MQTT thread); the first outcome wins."""
        if self._done.is_set():
            return
        self.accepted = accepted
        self.error = error
        self._done.set()
        if self._on_resolved is not None:
            try:
                self._on_resolved(self)
            except Exception:
                # The caller's bookkeeping must not break the MQTT loop.
                log.exception("a publish callback failed")

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True only if the broker acknowledged the message."""
        return self._done.wait(timeout) and self.accepted


class _Outgoing(NamedTuple):
    topic: str
    payload: bytes
    expiry_s: int | None
    retain: bool
    ticket: PublishTicket


class MqttConsumer:
    """Subscribes, hands every message to `deliver`, and sends acks when told to."""

    def __init__(  # noqa: PLR0913 - keyword-only configuration of one session
        self,
        *,
        broker: BrokerUrl,
        client_id: str,
        protocol: MqttProtocol,
        subscriptions: Sequence[TopicFilter],
        deliver: Callable[[mqtt.MQTTMessage, int], None],
        stats: HubStats,
        receive_maximum: int,
        session_expiry_s: int,
        keepalive_s: int,
    ) -> None:
        if protocol is MqttProtocol.AUTO:
            raise ValueError("resolve the MQTT protocol before building the consumer")
        self.broker = broker
        self.client_id = client_id
        self.protocol = protocol
        self.subscriptions = tuple(subscriptions)
        self._deliver = deliver
        self._stats = stats
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s

        v5 = protocol is MqttProtocol.V5
        self._client = BufferedReadClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            # MQTT 3.1.1 keeps the session through clean_session=False; MQTT 5 through
            # clean_start=False plus a session expiry, given at connect.
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self._client.tls_set()
        # Our callbacks catch what they must; paho re-raising would only kill the loop.
        self._client.suppress_exceptions = True
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

        self._generation = 0
        self._connack = False
        self._acks: deque[Sequence[Delivery]] = deque()
        self._outgoing: deque[_Outgoing] = deque()
        # Publishes the broker has not acknowledged yet, by packet id (this connection's).
        self._in_flight: dict[int, PublishTicket] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.settimeout(0.0)  # non-blocking
        self._wake_w.settimeout(0.0)
        self._close_requested = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-mqtt", daemon=True)

    # --- the writer's side ---------------------------------------------------------------

    def start(self) -> None:
        """Start the MQTT thread: connect, subscribe, keep reconnecting until closed."""
        self._thread.start()

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Queue acks for messages whose batch has committed; the MQTT thread sends them."""
        if deliveries:
            self._acks.append(deliveries)
            self._wake()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        expiry_s: int | None = None,
        retain: bool = False,
        on_resolved: Callable[[PublishTicket], None] | None = None,
    ) -> PublishTicket:
        """Queue a QoS 1 publish for the MQTT thread; the ticket says when the broker has it.

        `expiry_s` becomes the MQTT 5 Message Expiry Interval (a broker drops the message
        if it cannot deliver it in time); MQTT 3.1.1 has no such thing and ignores it.
        `retain` asks the broker to keep the message as the topic's latest. `on_resolved`
        is called with the ticket once it resolves (on the MQTT thread, or at once here if
        the session is closing): for publishes nobody waits for.
        """
        ticket = PublishTicket(on_resolved)
        if self._close_requested.is_set():
            ticket.resolve(accepted=False, error="the MQTT session is closing")
            return ticket
        self._outgoing.append(_Outgoing(topic, payload, expiry_s, retain, ticket))
        self._wake()
        return ticket

    def wait_connected(self, timeout: float) -> bool:
        """Wait until subscribed on a live connection (for tests and start-up logs)."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        """Whether the session is currently up."""
        return self._connected.is_set()

    def close(self, timeout: float) -> bool:
        """Send queued acks, disconnect cleanly (the session stays), stop the thread.

        Returns False if the thread did not finish within `timeout`.
        """
        self._close_requested.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        finished = not self._thread.is_alive()
        if finished:
            self._wake_r.close()
            self._wake_w.close()
        return finished

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    # --- the MQTT thread ------------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(initial_s=RECONNECT_FIRST_S, max_s=RECONNECT_CAP_S)
        while not self._close_requested.is_set():
            # A new generation before connecting: from here on, acks for messages of the
            # previous connection are skipped (paho also drops unsent packets on reconnect).
            self._generation += 1
            self._connack = False
            started = time.monotonic()
            try:
                self._connect()
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any failure
                delay = backoff.next_delay()
                log.warning("cannot reach MQTT broker %s (%r); retry in %.1fs",
                            self.broker.redacted(), exc, delay)  # fmt: skip
                self._fail_publishes("not connected to the broker")
                self._sleep(delay)
                continue
            try:
                self._serve()
            except (OSError, ValueError) as exc:
                # A socket closed under us (select() on a dead descriptor, a failed write):
                # the connection is gone; reconnecting drops paho's stale state.
                log.warning("MQTT connection broke: %r", exc)
            except Exception:
                log.exception("MQTT loop failed; reconnecting")
            self._connected.clear()
            self._fail_publishes("connection lost before the broker acknowledged")
            if self._close_requested.is_set():
                break
            if time.monotonic() - started >= STABLE_CONNECTION_S:
                backoff.reset()
            delay = backoff.next_delay()
            log.warning("MQTT connection lost; reconnecting in %.1fs", delay)
            self._sleep(delay)

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking early if close() is called."""
        self._close_requested.wait(seconds)

    def _connect(self) -> None:
        host, port, keepalive = self.broker.host, self.broker.port, self._keepalive_s
        if self.protocol is MqttProtocol.V311:
            # The session is kept through clean_session=False, given to the Client.
            self._client.connect(host, port, keepalive=keepalive)
            return
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call] # paho's Properties is unannotated
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = self._receive_maximum
        self._client.connect(
            host, port, keepalive=keepalive, clean_start=False, properties=properties
        )

    def _serve(self) -> None:
        """Run one connection until it is lost or closed."""
        client = self._client
        connack_deadline = time.monotonic() + CONNACK_TIMEOUT_S
        disconnecting = False
        while True:
            sock = client.socket()
            if sock is None:
                return
            self._send_acks()
            self._send_publishes()
            if client.socket() is not sock:
                continue  # sending the acks or publishes found the connection gone
            if not disconnecting and self._should_disconnect(connack_deadline):
                # After the acks above, so they leave before the DISCONNECT.
                disconnecting = True
                client.disconnect()
                continue
            # Bytes already read (TLS or our buffer) are invisible to select().
            pending = pending_of(sock)
            readable, writable, _ = select.select(
                [sock, self._wake_r],
                [sock] if client.want_write() else [],
                [],
                0 if pending else POLL_S,
            )
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)
            if (sock in readable or pending) and not self._read_burst(sock):
                continue
            if sock in writable and client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                continue
            client.loop_misc()

    def _should_disconnect(self, connack_deadline: float) -> bool:
        if not self._connack and time.monotonic() > connack_deadline:
            log.warning("no CONNACK from the MQTT broker in %.0fs", CONNACK_TIMEOUT_S)
            return True
        return self._close_requested.is_set()

    def _read_burst(self, sock: object) -> bool:
        """Read one packet, then those already buffered (no select() needed); False if lost."""
        read = self._client.loop_read
        rc = read()
        reads = 1
        while rc == mqtt.MQTT_ERR_SUCCESS and reads < PACKETS_PER_WAKE and pending_of(sock):
            rc = read()
            reads += 1
        return rc == mqtt.MQTT_ERR_SUCCESS

    def _send_acks(self) -> None:
        if not self._acks:
            return
        generation = self._generation
        up = self._connected.is_set()
        acked = skipped = 0
        ack = self._client.ack
        while self._acks:
            for message_generation, mid in self._acks.popleft():
                if up and message_generation == generation:
                    ack(mid, 1)
                    acked += 1
                else:
                    skipped += 1
        self._stats.messages_acked += acked
        self._stats.acks_skipped += skipped

    def _send_publishes(self) -> None:
        if not self._outgoing:
            return
        if not self._connected.is_set():
            # Not queued inside paho for a later connection: the dispatcher decides what
            # to do with a command that could not go out, and it may have expired by then.
            self._fail_publishes("not connected to the broker")
            return
        v5 = self.protocol is MqttProtocol.V5
        while self._outgoing:
            topic, payload, expiry_s, retain, ticket = self._outgoing.popleft()
            properties = None
            if v5 and expiry_s is not None:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call] # paho's Properties is unannotated
                properties.MessageExpiryInterval = expiry_s
            info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                ticket.resolve(accepted=False, error=mqtt.error_string(info.rc))
                continue
            self._in_flight[info.mid] = ticket

    def _fail_publishes(self, why: str) -> None:
        """Resolve every queued and in-flight publish as failed."""
        tickets = [*self._in_flight.values(), *(item.ticket for item in self._outgoing)]
        self._in_flight.clear()
        self._outgoing.clear()
        for ticket in tickets:
            ticket.resolve(accepted=False, error=why)

    # --- paho callbacks (on the MQTT thread) ----------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's signature
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connack = True
        if reason_code.is_failure:
            log.error("MQTT broker refused the hub's connection: %s", reason_code)
            return
        self._stats.mqtt_connections += 1
        log.info(
            "connected to %s as %s (MQTT %s, %s)",
            self.broker.redacted(),
            self.client_id,
            self.protocol.value,
            "session resumed" if flags.session_present else "new session",
        )
        if self.protocol is MqttProtocol.V5:
            client.subscribe([(f.value, SubscribeOptions(qos=f.qos)) for f in self.subscriptions])
        else:
            client.subscribe([(f.value, f.qos) for f in self.subscriptions])

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's signature
        _mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        refused = [
            f.value for f, code in zip(self.subscriptions, reason_codes, strict=False)
            if code.is_failure
        ]  # fmt: skip
        if refused:
            log.error("MQTT broker refused the hub's subscriptions %s", refused)
        log.info("subscribed to %s", ", ".join(f.value for f in self.subscriptions))
        self._connected.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's signature
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._close_requested.is_set():
            log.warning("MQTT disconnected: %s", reason_code)

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's signature
        mid: int,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        ticket = self._in_flight.pop(mid, None)
        if ticket is None:
            return
        if reason_code.is_failure:
            # MQTT 5: the broker refused it (say, "not authorized" on this topic).
            ticket.resolve(accepted=False, error=str(reason_code))
        else:
            ticket.resolve(accepted=True)

    def _on_message(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's signature
        message: mqtt.MQTTMessage,
    ) -> None:
        try:
            self._deliver(message, self._generation)
        except Exception:
            # Left unacknowledged: the broker redelivers it after a reconnect.
            log.exception("delivering an MQTT message failed")
