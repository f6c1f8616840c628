"""One hub process, wired together: MQTT consumer -> intake -> batches -> writer, and commands.

    with Hub(HubSettings()) as hub:   # seeds the filters, connects, subscribes
        ...                          # hub.stats counts what happens
    # leaving: the last batch is committed and acknowledged, then a clean disconnect

Threads: `hub-mqtt` runs the MQTT session and the intake (decode, filter, batch);
`hub-writer` commits batches, sends their acks and the units' storage acknowledgements
through the MQTT thread, fans out to Redis and sweeps silent vehicles; `hub-commands`
claims, signs and publishes (through the MQTT thread) queued commands and expires stale
ones; the caller's thread only starts, watches and stops them.
"""

from __future__ import annotations

import gc
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Self

import psycopg

from hub.batch import Batcher
from hub.consumer import MqttConsumer
from hub.database import connect
from hub.dispatcher import CommandDispatcher
from hub.events.actions import NotificationQueue
from hub.events.conditions import ConditionConfig, ConditionDetector
from hub.events.pipeline import EventPipeline
from hub.fanout import LiveFanout
from hub.filters import FilterConfig, FixFilter
from hub.intake import EPOCH, Intake
from hub.inventory import Inventory
from hub.repository import vehicle_state
from hub.stats import HubStats
from hub.storage_acks import StoredPublisher
from hub.writer import RETRY_CAP_S, RETRY_FIRST_S, Writer
from jobs.producer import create_producer
from protocol.backoff import Backoff
from protocol.signing import CommandSigner
from protocol.topics import TopicFilter, TopicKind

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    import paho.mqtt.client as mqtt

    from hub.batch import Batch
    from hub.consumer import PublishTicket
    from hub.settings import HubSettings

log = logging.getLogger(__name__)

# The kinds of topic the hub subscribes to (it publishes on `cmd`, never reads it).
CONSUMED_KINDS: Final = (TopicKind.TELEMETRY, TopicKind.STATUS, TopicKind.ACK)
# After the last commit, sending the acks and a DISCONNECT takes milliseconds; a broker
# that does not take them within this is gone, and they will be redelivered anyway.
MQTT_CLOSE_TIMEOUT_S: Final = 5.0
_ONE_MS: Final = timedelta(milliseconds=1)
# Garbage collector thresholds for a hub process. Ingest allocates several objects per
# message and holds a batch's worth alive, so at the default (700) the collector runs every
# few hundred messages and its older generations rescan every pending batch: measured, a
# fifth of the MQTT thread's time. The hub makes almost no reference cycles, so collecting
# every 50,000 allocations loses no memory worth having.
GC_THRESHOLDS: Final = (50_000, 20, 100)


def tune_gc() -> None:
    """Set a hub process's collector up for throughput (process-wide: call from a main)."""
    gc.freeze()  # what exists now (modules, seeded filters) lives as long as the process
    gc.set_threshold(*GC_THRESHOLDS)


class Hub:
    """Ingest for one hub process. Start with `start()` (or `with`), stop with `shutdown()`."""

    def __init__(
        self, settings: HubSettings, *, on_commit: Callable[[Batch, float], None] | None = None
    ) -> None:
        self.settings = settings
        self.stats = HubStats()
        self.fix_filter = FixFilter(
            FilterConfig(
                max_future_ms=round(settings.hub_max_future_s * 1000),
                max_age_ms=round(settings.hub_max_age_s * 1000),
                max_speed_kmh=settings.hub_max_speed_kmh,
            )
        )
        self.batcher = Batcher(
            max_fixes=settings.hub_batch_max_fixes,
            # Half the broker's window: one batch fills while the previous one commits.
            max_messages=max(1, settings.hub_receive_maximum // 2),
            max_delay_s=settings.hub_batch_max_delay_ms / 1000,
            max_bytes=settings.hub_batch_max_bytes,
        )
        self.inventory = Inventory(
            stats=self.stats,
            reload_s=settings.hub_inventory_reload_s,
            register_unknown=settings.hub_register_unknown,
        )
        policy = settings.watermark_policy()
        self.intake = Intake(
            root=settings.topic_root,
            fix_filter=self.fix_filter,
            stats=self.stats,
            inventory=self.inventory,
            storage_acks=policy is not None,
        )
        # amqtt misroutes `$share/...` filters: subscribe plainly where shares do not exist.
        share = settings.hub_share_group if settings.mqtt_shared_subscriptions else None
        self.consumer = MqttConsumer(
            broker=settings.broker,
            client_id=settings.hub_client_id,
            protocol=settings.protocol(),
            subscriptions=[TopicFilter(k, settings.topic_root, share) for k in CONSUMED_KINDS],
            deliver=self._deliver,
            stats=self.stats,
            receive_maximum=settings.hub_receive_maximum,
            session_expiry_s=settings.hub_session_expiry_s,
            keepalive_s=settings.hub_keepalive_s,
        )
        self.fanout = LiveFanout(
            settings.redis_url.get_secret_value(),
            stats=self.stats,
            interval_s=settings.hub_live_interval_s,
        )
        self.events = EventPipeline(
            settings.redis_url.get_secret_value(),
            stats=self.stats,
            detector=ConditionDetector(
                ConditionConfig(future_allowance_s=settings.hub_max_future_s)
            ),
            notifications=NotificationQueue(create_producer(settings)),
        )
        self.stored = None
        if policy is not None:
            self.stored = StoredPublisher(
                policy=policy,
                root=settings.topic_root,
                send=self._send_stored,
                stats=self.stats,
                sweep_s=settings.hub_storage_ack_sweep_s,
                sweep_limit=settings.hub_storage_ack_sweep_limit,
            )
        self.writer = Writer(
            database_url=settings.database_url.get_secret_value(),
            batcher=self.batcher,
            ack=self.consumer.ack,
            fanout=self.fanout,
            stats=self.stats,
            silence_timeout_s=settings.hub_silence_timeout_s,
            sweep_interval_s=settings.hub_sweep_interval_s,
            events=self.events,
            inventory=self.inventory,
            admit=self._admit,
            max_future_s=settings.hub_max_future_s,
            stored=self.stored,
            on_commit=on_commit,
        )
        self.signer = CommandSigner(settings.signing_key())
        self.dispatcher = CommandDispatcher(
            database_url=settings.database_url.get_secret_value(),
            hub_id=settings.hub_client_id,
            root=settings.topic_root,
            signer=self.signer,
            publish=lambda topic, payload, expiry_s: self.consumer.publish(
                topic, payload, expiry_s=expiry_s
            ),
            connected=lambda: self.consumer.connected,
            stats=self.stats,
            sweep_s=settings.hub_command_sweep_s,
            publish_timeout_s=settings.hub_command_publish_timeout_s,
            min_remaining_s=settings.hub_command_min_remaining_s,
            answer_grace_s=settings.hub_command_answer_grace_s,
            redis_url=settings.redis_url.get_secret_value(),
        )
        self._stop = threading.Event()
        self._started = False
        self._shut_down = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> bool:
        """Seed the filters and inventory from the database, then consume. False if stopped."""
        if not self._seed():
            return False
        self._started = True
        self.writer.start()
        self.consumer.start()
        self.dispatcher.start()
        log.info("signing commands with key %s", self.signer.key_id)
        return True

    def request_stop(self) -> None:
        """Ask `run()` to stop; safe to call from a signal handler."""
        self._stop.set()

    def wait_for_stop(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a stop request; True once requested."""
        return self._stop.wait(timeout)

    def shutdown(self) -> bool:
        """Take no more messages, commit and acknowledge what is in hand, disconnect.

        Returns True if every message taken in was committed and acknowledged; False if the
        database stayed away for the whole grace period (those messages are redelivered).
        """
        if self._shut_down:
            return True
        self._shut_down = True
        self._stop.set()
        self.batcher.close()
        committed = True
        if self._started:
            # First: a round in progress still needs the MQTT thread for its PUBACKs.
            if not self.dispatcher.close(self.settings.hub_command_publish_timeout_s + 1):
                log.warning("command dispatcher did not stop in time")
            committed = self.writer.finish(self.settings.hub_stop_grace_s)
            if not self.consumer.close(MQTT_CLOSE_TIMEOUT_S):
                log.warning("MQTT session did not close in time; unsent acks are redelivered")
        self.fanout.close()
        self.events.close()
        return committed

    def run(self) -> int:
        """Run until `request_stop()`, logging counters; the exit code: 0 clean, 1 if not."""
        if not self.start():
            self.shutdown()
            return 0
        tune_gc()
        interval = self.settings.hub_stats_interval_s
        while not self._stop.wait(interval):
            log.info("%s", self.stats.summary())
        committed = self.shutdown()
        log.info("stopped: %s", self.stats.summary())
        return 0 if committed else 1

    def __enter__(self) -> Self:
        if not self.start():
            raise RuntimeError("hub stopped before it started")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    def _seed(self) -> bool:
        """Load the inventory and every stored vehicle state, waiting for the database."""
        backoff = Backoff(initial_s=RETRY_FIRST_S, max_s=RETRY_CAP_S)
        url = self.settings.database_url.get_secret_value()
        while not self._stop.is_set():
            try:
                with connect(url, "seed") as conn:
                    self.inventory.load(conn)
                    states = vehicle_state.load_states(conn)
                break
            except psycopg.Error as exc:
                delay = backoff.next_delay()
                log.warning("database not ready (%s); retry in %.1fs", exc, delay)
                self._stop.wait(delay)
        else:
            return False
        for state in states:
            self.fix_filter.seed(
                state.vehicle_id,
                ts=(state.ts - EPOCH) // _ONE_MS,
                seq=state.seq,
                status=(state.locked, state.doors_open, state.engine_on, state.alarm),
                lat=state.lat,
                lon=state.lon,
            )
        log.info(
            "inventory of %d vehicles; filters seeded from %d stored vehicle states",
            len(self.inventory),
            len(states),
        )
        return True

    def _admit(self, batch: Batch, refusals: Mapping[str, str]) -> None:
        """The writer's hand-back of held messages: intake runs under the producer's lock."""
        with self.batcher.locked():
            self.intake.admit(batch, refusals)

    def _send_stored(self, topic: str, payload: bytes) -> None:
        """Publish a storage acknowledgement, retained; nobody waits for the broker's PUBACK."""
        self.consumer.publish(topic, payload, retain=True, on_resolved=self._stored_resolved)

    def _stored_resolved(self, ticket: PublishTicket) -> None:
        if not ticket.accepted:
            # Lost: the unit keeps its fixes, and hears the next word (or asks again by
            # sending them after it reconnects).
            self.stats.watermark_publish_failures += 1

    # --- the MQTT thread's entry point ---------------------------------------------------

    def _deliver(self, message: mqtt.MQTTMessage, generation: int) -> None:
        """Add one received message to the current batch (blocks while the writer is behind)."""
        received_at = datetime.now(UTC)
        batch = self.batcher.acquire()
        if batch is None:
            return  # stopping: left unacknowledged, so the broker redelivers it
        try:
            try:
                topic = message.topic
            except UnicodeDecodeError:
                topic = "(topic is not UTF-8)"
            # bytes() of a bytes object is that object: no copy.
            payload = bytes(message.payload)
            self.intake.handle(
                batch, topic, payload, retained=message.retain, received_at=received_at
            )
            if message.qos:
                batch.deliveries.append((generation, message.mid))
            else:
                self.stats.messages_qos0 += 1
        finally:
            self.batcher.release(batch)
