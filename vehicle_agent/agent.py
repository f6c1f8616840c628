"""The in-car agent: a reporting loop that queues fixes and a connection loop that sends them.

The two loops meet only in the queue. The reporting loop samples the sensors, decides when
to take a fix (`reporting.ReportingPolicy`) and puts it in the queue, connected or not. The
connection loop is an explicit reconnect loop with capped, jittered backoff; each
connection registers the last will, subscribes to the command and `stored` topics, says
`online`, then drains the queue (`sender.TelemetrySender`), handles commands and takes the
hub's storage acknowledgements in (`storage_acks.StorageAcks`) until the link fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import aiomqtt
from pydantic import ValidationError

from protocol.backoff import Backoff
from protocol.errors import ProtocolError
from protocol.signing import CommandVerifier
from protocol.status import last_will_payload, online_payload
from protocol.stored import decode_stored
from protocol.telemetry import encode_telemetry
from protocol.topics import Topic
from vehicle_agent.backends.base import BackendError
from vehicle_agent.backends.sim import SimCar
from vehicle_agent.commands import CommandContext, CommandHandler, Outcome, Reply
from vehicle_agent.fixes import build_fix, next_stamp
from vehicle_agent.queue import MemoryFixQueue, SqliteFixQueue
from vehicle_agent.reporting import ReportingPolicy, Sample, Trigger
from vehicle_agent.safety import SafetyRules
from vehicle_agent.sender import TelemetrySender
from vehicle_agent.storage_acks import Mode, StorageAcks

if TYPE_CHECKING:
    from collections.abc import Callable

    from paho.mqtt.reasoncodes import ReasonCode

    from vehicle_agent.backends.base import Actuator, PositionSource, StatusSource
    from vehicle_agent.config import AgentConfig
    from vehicle_agent.queue import FixQueue
    from vehicle_agent.records import QueuedFix

log = logging.getLogger(__name__)
# paho's packet-level debug log, apart so that it can be silenced without the agent's own.
mqtt_log = logging.getLogger("vehicle_agent.mqtt")

# Saying `offline` on the way out may wait this long for its PUBACK: plenty on a live link,
# and a stop never hangs on a dead one (the broker then publishes the last will anyway).
OFFLINE_TIMEOUT_S: Final = 3.0
# Messages paho may have in flight beyond the telemetry window: the status and acks.
EXTRA_INFLIGHT: Final = 4
# SUBACK return codes from 0x80 on refuse the subscription (MQTT 3.1.1 and 5).
SUBACK_FAILURE: Final = 0x80


@dataclass(slots=True)
class AgentStats:
    """Live counters, for logs and the simulator's progress display."""

    connected: bool = False
    fixes_enqueued: int = 0
    # Fixes the broker acknowledged (PUBACK), counting a fix sent again each time.
    fixes_acked: int = 0
    # Queued fixes the broker has not acknowledged yet.
    queue_depth: int = 0
    queue_dropped: int = 0
    commands_executed: int = 0
    commands_rejected: int = 0
    reconnects: int = 0
    last_error: str | None = None
    # Beyond the contract's fields: actions tried and failed, and repeats answered again.
    commands_failed: int = 0
    commands_repeated: int = 0
    # Contract 1.1: fixes the hub confirmed stored, fixes the broker has that wait for
    # that, whose acknowledgement lets a fix go (`hub` or `broker`), and how often a gap
    # made the agent send its queue again.
    fixes_confirmed: int = 0
    awaiting_hub: int = 0
    storage_acks: str = Mode.HUB.value
    resends: int = 0


@dataclass(frozen=True, slots=True)
class _Topics:
    """This vehicle's five topic strings."""

    telemetry: str
    status: str
    command: str
    ack: str
    stored: str

    @classmethod
    def of(cls, vehicle_id: str, root: str) -> _Topics:
        """The topics of `vehicle_id` under `root`."""
        return cls(
            Topic.telemetry(vehicle_id, root=root).value,
            Topic.status(vehicle_id, root=root).value,
            Topic.command(vehicle_id, root=root).value,
            Topic.ack(vehicle_id, root=root).value,
            Topic.stored(vehicle_id, root=root).value,
        )


class _LinkDropped(Exception):  # noqa: N818 - a signal between tasks, not an error
    """`set_network(False)` asked for the connection to go."""


class Agent:
    """One vehicle's agent; `run` until cancelled. Call its methods from the loop's thread."""

    def __init__(  # noqa: PLR0913 - the contract's signature: keyword-only collaborators
        self,
        config: AgentConfig,
        *,
        position: PositionSource,
        status: StatusSource,
        actuator: Actuator,
        queue: FixQueue,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.queue = queue
        self.stats = AgentStats(queue_depth=len(queue), queue_dropped=queue.dropped)
        self._acks = StorageAcks(
            policy=config.storage_acks,
            queue_id=queue.queue_id,
            timeout_s=config.hub_ack_timeout_s,
            silence_s=config.hub_silence_timeout_s,
            window=config.unconfirmed_window,
            resend_after_s=config.resend_after_s,
        )
        self.stats.storage_acks = self._acks.mode.value
        self._acks_changed = asyncio.Event()
        self._position = position
        self._status = status
        self._clock = clock
        self._topics = _Topics.of(config.vehicle_id, config.topic_root)
        self._policy = ReportingPolicy(
            moving_interval_s=config.moving_interval_s,
            parked_interval_s=config.parked_interval_s,
            heading_change_deg=config.heading_change_deg,
            moving_speed_kmh=config.moving_speed_kmh,
        )
        self._backoff = Backoff(
            config.backoff_initial_s, config.backoff_max_s, config.backoff_jitter
        )
        keys = config.verifying_keys()
        verifier = CommandVerifier(keys, config.vehicle_id, clock=clock) if keys else None
        if verifier is None:
            log.warning("no trusted_keys configured: every command will be dropped")
        self._commands = CommandHandler(
            verifier=verifier,
            log=queue.commands,
            rules=SafetyRules(config.max_immobilize_speed_kmh, config.allow_unlock_during_alarm),
            car=CommandContext(position, status, actuator),
            clock=clock,
            actuator_timeout_s=config.actuator_timeout_s,
        )
        self._report_requested = asyncio.Event()
        self._network_up = True
        self._network_changed = asyncio.Event()
        self._sender: TelemetrySender | None = None
        self._ever_connected = False

    # --- the contract's controls -------------------------------------------------------

    def report_now(self) -> None:
        """Take a fix at once (status changes are also noticed at the next sample)."""
        self._report_requested.set()

    def set_network(self, up: bool) -> None:  # noqa: FBT001 - the contract's signature
        """Simulate losing (False) or regaining (True) the network; fixes keep queueing."""
        if up != self._network_up:
            self._network_up = up
            self._network_changed.set()

    async def run(self) -> None:
        """Report and stay connected until cancelled; then say offline and close cleanly."""
        started: list[PositionSource | StatusSource] = []
        try:
            for backend in _unique(self._position, self._status):
                await backend.start()  # a BackendError here ends `run`: nothing to report
                started.append(backend)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._reporting_loop(), name="reporting")
                tasks.create_task(self._connection_loop(), name="connection")
        finally:
            for backend in reversed(started):
                await backend.close()

    # --- reporting ---------------------------------------------------------------------

    async def _reporting_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last: Sample | None = None
        last_at: float | None = None
        status_missing = False
        while True:
            try:
                sample = Sample(self._position.position(), self._status.status())
            except BackendError as exc:  # e.g. the bus went quiet; report again once it is back
                if not status_missing:
                    log.warning("no fix taken while the car's status is unknown: %s", exc)
                status_missing = True
                await asyncio.sleep(self.config.sample_interval_s)
                continue
            status_missing = False
            now = loop.time()
            trigger = self._policy.decide(last, last_at, sample, now)
            if self._report_requested.is_set():
                self._report_requested.clear()
                trigger = Trigger.REQUESTED
            if trigger is not None:
                self._take_fix(sample, trigger)
                last, last_at = sample, now
            assert last_at is not None  # a first sample always triggers
            due_in = last_at + self._policy.interval(sample) - loop.time()
            with contextlib.suppress(TimeoutError):
                wait = min(self.config.sample_interval_s, max(0.0, due_in))
                await asyncio.wait_for(self._report_requested.wait(), wait)

    def _take_fix(self, sample: Sample, trigger: Trigger) -> None:
        queue = self.queue
        seq, ts = next_stamp(queue.last_seq, queue.last_ts, int(self._clock() * 1000))
        queue_id = queue_floor = None
        if self._acks.announces:
            queue_id = queue.queue_id
            floor = queue.floor_after_put()
            queue_floor = self._acks.floor_to_announce(
                seq if floor is None else floor, queue.confirmed_next
            )
        try:
            fix = build_fix(
                sample,
                seq=seq,
                ts=ts,
                queue_dropped=queue.dropped,
                queue_id=queue_id,
                queue_floor=queue_floor,
            )
        except ValidationError as exc:  # e.g. neither fuel nor battery level readable
            log.warning("no fix taken: sensors gave values outside the contract: %s", exc)
            return
        dropped = queue.put(seq, ts, encode_telemetry(fix))
        if dropped and _is_milestone(queue.dropped, dropped):
            log.warning("queue full: %d oldest fixes dropped so far", queue.dropped)
        log.debug("fix seq=%d ts=%d (%s)", seq, ts, trigger)
        self.stats.fixes_enqueued += 1
        self.stats.queue_dropped = queue.dropped
        self._count_queue()
        if self._sender is not None:
            self._sender.notify()

    def _count_queue(self) -> None:
        delivered = self.queue.delivered
        self.stats.queue_depth = len(self.queue) - delivered
        self.stats.awaiting_hub = delivered
        self.stats.storage_acks = self._acks.mode.value

    # --- acknowledgements ----------------------------------------------------------------

    def _delivered(self, fixes: list[QueuedFix]) -> None:
        """The broker acknowledged a message: its fixes leave now, or wait for the hub."""
        self.stats.fixes_acked += len(fixes)
        seqs = [fix.seq for fix in fixes]
        waiting = self._acks.fallback_at() is not None
        ids = [fix.id for fix in fixes]
        now, confirmed_next = self._monotonic(), self.queue.confirmed_next
        if self._acks.delivered(min(seqs), max(seqs), now, confirmed_next=confirmed_next):
            self.queue.remove(ids)
        else:
            self.queue.mark_delivered(ids)
            if not waiting and self._acks.fallback_at() is not None:
                self._acks_changed.set()  # the fallback clock started
        self._count_queue()

    def _take_stored(self, payload: bytes) -> None:
        """The hub said which fixes it has stored."""
        try:
            stored = decode_stored(payload)
        except ProtocolError as exc:
            log.warning("ignoring a malformed storage acknowledgement: %s", exc.message)
            return
        queue = self.queue
        was = self._acks.mode
        verdict = self._acks.stored(
            stored,
            last_seq=queue.last_seq,
            confirmed_next=queue.confirmed_next,
            now=self._monotonic(),
        )
        if was is not self._acks.mode:
            log.info("the hub acknowledges storage: fixes now leave the queue when it says so")
        if verdict.ignored is not None:
            log.debug(
                "storage acknowledgement for queue %d ignored: %s", stored.queue_id, verdict.ignored
            )
        if verdict.confirm is not None:
            self.stats.fixes_confirmed += queue.confirm(verdict.confirm)
        if verdict.resend:
            log.warning(
                "the hub still lacks seq %d, sent long ago: sending the queue again",
                stored.next_seq,
            )
            self.stats.resends += 1
            if self._sender is not None:
                self._sender.rewind()
        self._count_queue()
        self._acks_changed.set()
        if self._sender is not None:
            self._sender.notify()

    def _fall_back_to_broker_acks(self, why: str) -> None:
        removed = self.queue.remove_delivered()
        log.warning(
            "%s: fixes now leave the queue at the broker's acknowledgement (%d went)", why, removed
        )
        self._count_queue()
        if self._sender is not None:
            self._sender.notify()

    async def _watch_storage_acks(self) -> None:
        """Fall back to broker acknowledgements when the hub stays silent (policy `auto`)."""
        while True:
            self._acks_changed.clear()
            due = self._acks.fallback_at()
            wait = None if due is None else max(0.0, due - self._monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acks_changed.wait(), wait)
            if self._acks.check(self._monotonic()):
                self._fall_back_to_broker_acks("no storage acknowledgement from the hub")

    # --- connection --------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        while True:
            while not self._network_up:
                self._network_changed.clear()
                await self._network_changed.wait()
            error: BaseException | None = None
            try:
                await self._connection()
            except* (aiomqtt.MqttError, OSError) as group:
                error = group.exceptions[0]
            except* _LinkDropped:
                pass
            self.stats.connected = False
            if not self._network_up:
                log.info("network down (simulated): disconnected")
            elif error is not None:
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.warning("MQTT connection failed or lost: %s", self.stats.last_error)
            if self._network_up:
                await self._pause(self._backoff.next_delay())

    async def _pause(self, delay: float) -> None:
        """Wait `delay` seconds before reconnecting, or less if the network comes or goes."""
        self._network_changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._network_changed.wait(), delay)

    def _make_client(self) -> aiomqtt.Client:
        config = self.config
        broker = config.broker
        status = self._topics.status
        will = aiomqtt.Will(status, last_will_payload(self._now_ms()), qos=1, retain=True)
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=config.mqtt_client_id,
            # A persistent session: a command sent during a short outage is queued by the
            # broker and arrives on reconnect (its expiry guards against stale ones).
            clean_session=False,
            will=will,
            keepalive=config.keepalive_s,
            timeout=config.publish_timeout_s,
            max_inflight_messages=config.publish_window + EXTRA_INFLIGHT,
            tls_context=ssl.create_default_context() if broker.tls else None,
            logger=mqtt_log,
        )
        # aiomqtt warns above this many unacknowledged calls; the window is the real bound.
        client.pending_calls_threshold = config.publish_window + EXTRA_INFLIGHT
        return client

    async def _connection(self) -> None:
        async with self._make_client() as client:
            log.info("connected to %s as %s", self.config.broker.redacted(), client.identifier)
            self.stats.connected = True
            if self._ever_connected:
                self.stats.reconnects += 1
            self._ever_connected = True
            self._backoff.reset()
            try:
                await self._serve(client)
            except asyncio.CancelledError:
                await self._say_offline(client)
                raise
            finally:
                self._sender = None
                self.stats.connected = False

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._acks.connected(self._monotonic())
        topics = [(self._topics.command, 1)]
        if self._acks.announces:
            topics.append((self._topics.stored, 1))
        granted = await client.subscribe(topics)
        if _refused(granted[0]):
            # Telemetry still flows; the broker's ACL for this vehicle needs fixing.
            log.error(
                "the broker refused the subscription to %s: no command will arrive",
                self._topics.command,
            )
        if len(granted) > 1 and _refused(granted[1]) and self._acks.subscription_refused():
            # A broker set up before contract 1.1: its ACL lets no storage ack through.
            self._fall_back_to_broker_acks(f"the broker refused {self._topics.stored}")
        await client.publish(
            self._topics.status, online_payload(self._now_ms()), qos=1, retain=True
        )
        for record in self.queue.commands.unsent():
            if record.ack is not None:
                await client.publish(self._topics.ack, record.ack, qos=1)
                self.queue.commands.mark_sent(record.cmd_id)
        self._sender = TelemetrySender(
            self.queue,
            client.publish,
            self._topics.telemetry,
            window=self.config.publish_window,
            batch_size=self.config.backlog_batch_size,
            rate=self.config.backlog_rate,
            timeout=self.config.publish_timeout_s,
            on_delivered=self._delivered,
            may_send=self._acks.window_open,
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._sender.run(), name="sender")
            tasks.create_task(self._receive(client), name="receive")
            tasks.create_task(self._watch_network(client), name="network")
            tasks.create_task(self._watch_storage_acks(), name="storage-acks")

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Publish the retained offline status: a clean disconnect discards the last will."""
        try:
            await client.publish(
                self._topics.status,
                last_will_payload(self._now_ms()),
                qos=1,
                retain=True,
                timeout=OFFLINE_TIMEOUT_S,
            )
        except aiomqtt.MqttError as exc:
            log.warning("could not publish the offline status: %s", exc)

    async def _receive(self, client: aiomqtt.Client) -> None:
        command_topic, stored_topic = self._topics.command, self._topics.stored
        async for message in client.messages:
            topic = message.topic.value
            if topic not in {command_topic, stored_topic} or not isinstance(
                message.payload, bytes | bytearray
            ):
                # amqtt delivers retained messages of other topics now and then.
                log.info("ignoring a message on %s", topic)
                continue
            if topic == stored_topic:
                self._take_stored(bytes(message.payload))
                continue
            reply = await self._commands.handle(bytes(message.payload))
            if reply is not None:
                await self._acknowledge(client, reply)
            else:
                self.stats.commands_rejected += 1

    async def _acknowledge(self, client: aiomqtt.Client, reply: Reply) -> None:
        counters = {
            Outcome.DONE: "commands_executed",
            Outcome.REJECTED: "commands_rejected",
            Outcome.FAILED: "commands_failed",
            Outcome.REPEAT: "commands_repeated",
        }
        name = counters[reply.outcome]
        setattr(self.stats, name, getattr(self.stats, name) + 1)
        await client.publish(self._topics.ack, reply.ack, qos=1)
        if reply.logged:
            self.queue.commands.mark_sent(reply.cmd_id)
        if reply.outcome is not Outcome.REPEAT:
            # The hub confirms a command by the telemetry that shows its effect.
            self.report_now()

    async def _watch_network(self, client: aiomqtt.Client) -> None:
        while self._network_up:
            self._network_changed.clear()
            await self._network_changed.wait()
        # Cut the link as a lost network would: no DISCONNECT, so the broker publishes the
        # last will, and the receiving task ends as on any lost connection. aiomqtt has no
        # public way to do this; the socket belongs to its paho client.
        sock = client._client.socket()  # noqa: SLF001 - see above
        if not isinstance(sock, socket.socket):
            raise _LinkDropped
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @staticmethod
    def _monotonic() -> float:
        # The storage-ack timers measure intervals: a clock step must not fire them.
        return time.monotonic()


def _refused(code: int | ReasonCode) -> bool:
    """Whether a SUBACK code refuses the subscription (0x80 and above)."""
    value = code if isinstance(code, int) else code.value
    return value >= SUBACK_FAILURE


def _is_milestone(total: int, added: int) -> bool:
    """Whether the drop count `total` just reached 1, 10, 100...

    A full queue drops one fix per fix taken; a simulated fleet must not turn that into a
    log line each.
    """
    milestone: int = 10 ** (len(str(total)) - 1)
    return total - added < milestone <= total


def _unique(*backends: PositionSource | StatusSource) -> list[PositionSource | StatusSource]:
    """Each backend once, though one object may play several roles (a SimCar, a CAN bus)."""
    seen: dict[int, PositionSource | StatusSource] = {}
    for backend in backends:
        seen.setdefault(id(backend), backend)
    return list(seen.values())


def build_agent(config: AgentConfig) -> Agent:
    """An agent with the backends and queue its configuration names (for `freecar agent`)."""
    car = SimCar(
        lat=config.sim_lat,
        lon=config.sim_lon,
        fuel_pct=config.sim_fuel_pct,
        battery_pct=config.sim_battery_pct,
    )
    position: PositionSource = car
    status: StatusSource = car
    actuator: Actuator = car
    if config.position_backend == "gpsd":
        # Imported only when configured, so a unit without that hardware needs none of it.
        from vehicle_agent.backends.gpsd import GpsdPositionSource  # noqa: PLC0415 - see above

        position = GpsdPositionSource(config.gpsd_host, config.gpsd_port)
    if "can" in (config.status_backend, config.actuator_backend):
        from vehicle_agent.backends.can import CanBackend  # noqa: PLC0415 - likewise

        bus = CanBackend(
            config.can_channel, config.can_interface, config.can_dbc, bitrate=config.can_bitrate
        )
        if config.status_backend == "can":
            status = bus
        if config.actuator_backend == "can":
            actuator = bus
    queue: FixQueue
    if config.queue_path is None:
        queue = MemoryFixQueue(config.queue_max_fixes)
    else:
        queue = SqliteFixQueue(config.queue_path, config.queue_max_fixes)
    return Agent(config, position=position, status=status, actuator=actuator, queue=queue)
