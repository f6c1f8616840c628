"""Turn one received MQTT message into batch content: rows, state, presence or a dead letter.

Runs on the MQTT thread for every message, so it does the least that is correct: parse the
topic, decode with the protocol package, run the filters, build rows. Anything a message
gets wrong (bad topic, bad payload) becomes a dead letter; anything the hub gets wrong (a
bug in a handler) is logged and dead-lettered too, so one message can never stop ingest.

A message of a vehicle that is not in the hub's inventory (`hub.inventory`) is held in the
batch as it came, neither decoded nor filtered; before the batch's transaction the writer
asks the database and calls `admit`: a vehicle added a moment ago is then taken in, and the
messages of unknown or retired vehicles become dead letters (`unknown_vehicle`).

For contract 1.1's storage acknowledgement (`hub.storage_acks`), intake notes in the batch
every fix of every telemetry message it settles, right after decoding and before the
filters: a fix the filters drop is handled as much as one the batch stores. A message that
cannot be decoded is dead-lettered, and so handled too: what can still be read of its fixes
is noted (`salvage_fix_refs`). Messages of vehicles refused as unknown are not: the hub
keeps no watermark for vehicles outside its inventory.

Intake is used under the batcher's lock only (by the MQTT thread, and by the writer for
`admit`), so its filters and counters see one caller at a time.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from db.telemetry import TelemetryRow
from hub.batch import CommandAck, DeadLetter, Held, StatusMessage, TelemetryMessage
from protocol.acks import decode_ack
from protocol.errors import ProtocolError, TopicError
from protocol.status import decode_status
from protocol.stored import FixRef, salvage_fix_refs
from protocol.telemetry import decode_telemetry
from protocol.topics import Topic, TopicKind

if TYPE_CHECKING:
    from collections.abc import Callable, Container, Mapping

    from hub.batch import Batch
    from hub.filters import Decision, FixFilter
    from hub.stats import HubStats
    from protocol.telemetry import Telemetry

log = logging.getLogger(__name__)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS: Final = timedelta(milliseconds=1)

# Dead-letter reason for a message the hub itself failed on (a bug, not the sender's fault).
REASON_HUB_ERROR: Final = "hub_error"
# Dead-letter reason for a message of a vehicle not in the inventory, or retired.
REASON_UNKNOWN_VEHICLE: Final = "unknown_vehicle"
# Key of the hub's own notes in `telemetry.extra`, apart from the unit's unknown fields:
# `position_ts` when the position was carried over from an earlier fix, `sent_ts` when the
# fix was re-timed to the hub's clock because the unit's clock was in the future.
HUB_NOTES_KEY: Final = "_hub"
_JSON_WHITESPACE: Final = b" \t\r\n"
# Parsed topics are cached (a vehicle has three); the cache starts over past this many, so
# a flood of bogus topics cannot grow it without bound.
_TOPIC_CACHE_LIMIT: Final = 100_000


def millis_to_datetime(ms: int) -> datetime:
    """An epoch-milliseconds timestamp as an aware UTC datetime, exactly."""
    return EPOCH + timedelta(milliseconds=ms)


class Intake:
    """Decodes and filters messages into the current batch; one caller at a time."""

    def __init__(
        self,
        *,
        root: str,
        fix_filter: FixFilter,
        stats: HubStats,
        inventory: Container[str],
        storage_acks: bool = True,
    ) -> None:
        self.root = root
        self.fix_filter = fix_filter
        self.stats = stats
        self.inventory = inventory
        # Whether to note the fixes each batch handles, for storage acknowledgements.
        self.storage_acks = storage_acks
        # A status dated further ahead than a fix may be is not believed (see `_status`).
        self._max_future = timedelta(milliseconds=fix_filter.config.max_future_ms)
        self._topics: dict[str, Topic] = {}
        # Dispatch on the topic's kind, found by parsing the real topic: paho never matches a
        # `$share/...` filter to a topic, so per-filter callbacks would never fire.
        self._handlers: dict[
            TopicKind, Callable[[Batch, str, str, bytes, bool, datetime], None]
        ] = {
            TopicKind.TELEMETRY: self._telemetry,
            TopicKind.STATUS: self._status,
            TopicKind.ACK: self._ack,
        }

    def handle(
        self, batch: Batch, topic: str, payload: bytes, *, retained: bool, received_at: datetime
    ) -> None:
        """Process one message into `batch` (or hold it there, see `admit`); never raises."""
        batch.messages += 1
        batch.bytes += len(payload)
        self.stats.messages_received += 1
        try:
            parsed = self._topics.get(topic) or self._parse(topic)
            if parsed.kind not in self._handlers:
                raise TopicError(f"the hub does not consume {parsed.kind.value!r} topics")
        except ProtocolError as exc:
            self._dead_letter(
                batch, topic, payload, reason=exc.code, detail=exc.message, received_at=received_at
            )
            return
        if parsed.vehicle_id not in self.inventory:
            batch.held.append(Held(parsed, topic, payload, retained, received_at))
            return
        self._dispatch(batch, parsed, topic, payload, retained=retained, received_at=received_at)

    def admit(self, batch: Batch, refusals: Mapping[str, str]) -> None:
        """Take in the batch's held messages; those of `refusals`' vehicles become dead letters.

        `refusals` maps a vehicle to why it is refused ("not in the inventory", "retired").
        """
        held, batch.held = batch.held, []
        for parsed, topic, payload, retained, received_at in held:
            why = refusals.get(parsed.vehicle_id)
            if why is None:
                self._dispatch(
                    batch, parsed, topic, payload, retained=retained, received_at=received_at
                )
                continue
            self.stats.unknown_vehicle += 1
            self._dead_letter(
                batch,
                topic,
                payload,
                reason=REASON_UNKNOWN_VEHICLE,
                detail=f"vehicle {parsed.vehicle_id!r}: {why}",
                received_at=received_at,
            )

    def _dispatch(  # noqa: PLR0913 - one message's parts
        self,
        batch: Batch,
        parsed: Topic,
        topic: str,
        payload: bytes,
        *,
        retained: bool,
        received_at: datetime,
    ) -> None:
        handler = self._handlers[parsed.kind]
        try:
            handler(batch, parsed.vehicle_id, topic, payload, retained, received_at)
        except ProtocolError as exc:
            self._dead_letter(
                batch, topic, payload, reason=exc.code, detail=exc.message, received_at=received_at
            )
            self._salvage(batch, parsed, payload)
        except Exception as exc:
            # A bug must not stop ingest, nor loop forever on redelivery: keep the message
            # for a human, acknowledge it with its batch, carry on.
            log.exception("handler for %s failed; message dead-lettered", parsed.kind.value)
            self.stats.handler_errors += 1
            self._dead_letter(
                batch,
                topic,
                payload,
                reason=REASON_HUB_ERROR,
                detail=repr(exc),
                received_at=received_at,
            )
            self._salvage(batch, parsed, payload)

    def _salvage(self, batch: Batch, parsed: Topic, payload: bytes) -> None:
        """Note the fixes a dead-lettered telemetry message names: refused for good, handled.

        (Noting a fix twice, when a bug struck after `_telemetry` noted it, changes nothing.)
        """
        if self.storage_acks and parsed.kind is TopicKind.TELEMETRY:
            refs = salvage_fix_refs(payload)
            if refs:
                batch.handled.add_message(parsed.vehicle_id, refs, backlog=_is_array(payload))

    def _parse(self, topic: str) -> Topic:
        parsed = Topic.parse(topic, root=self.root)
        if len(self._topics) >= _TOPIC_CACHE_LIMIT:
            self._topics.clear()
        self._topics[topic] = parsed
        return parsed

    def _dead_letter(  # noqa: PLR0913 - the columns of a dead letter
        self,
        batch: Batch,
        topic: str,
        payload: bytes,
        *,
        reason: str,
        detail: str,
        received_at: datetime,
    ) -> None:
        self.stats.dead_lettered += 1
        batch.dead_letters.append(DeadLetter.of(topic, payload, reason, detail, received_at))

    def _telemetry(
        self,
        batch: Batch,
        vehicle_id: str,
        topic: str,
        payload: bytes,
        _retained: bool,  # noqa: FBT001 - positional by the shared handler signature
        received_at: datetime,
    ) -> None:
        fixes = decode_telemetry(payload)  # raises before the batch is touched
        if self.storage_acks:
            # Before the filters: a fix they drop is handled as much as a stored one. An
            # array is a unit's backlog (live fixes go one per message).
            batch.handled.add_message(vehicle_id, map(FixRef.of, fixes), backlog=_is_array(payload))
        stats = self.stats
        stats.fixes_received += len(fixes)
        batch.fixes += len(fixes)
        now_ms = (received_at - EPOCH) // ONE_MS
        check = self.fix_filter.check
        kept: list[tuple[TelemetryRow, bool]] = []
        for fix in fixes:
            decision = check(vehicle_id, fix, now_ms)
            if decision.reason is not None:
                counts = stats.kept_for_status if decision.keep else stats.filtered
                counts[decision.reason] += 1
            if decision.keep:
                kept.append((_row(vehicle_id, fix, decision), decision.newest))
        first = len(batch.rows)
        for row, newest in kept:
            batch.keep_row(row, newest=newest)
        if kept:
            batch.telemetry_messages.append(
                TelemetryMessage(topic, payload, received_at, first, len(batch.rows))
            )
        # Telemetry is the best evidence a vehicle is connected: it clears a silence-offline.
        batch.saw(vehicle_id, received_at, online=True, online_at=received_at)

    def _status(  # noqa: PLR0913, PLR0917 - the handlers' shared signature
        self,
        batch: Batch,
        vehicle_id: str,
        topic: str,
        payload: bytes,
        retained: bool,  # noqa: FBT001 - positional by the shared handler signature
        received_at: datetime,
    ) -> None:
        status = decode_status(payload)
        self.stats.status_messages += 1
        # Online: the unit's own clock at connect. A live offline is usually the broker
        # publishing the will, whose `ts` is when the unit connected, so the time we hear it
        # is the better one (protocol section 3). A retained offline seen on subscribing is
        # old news whose only date is that `ts`.
        at = millis_to_datetime(status.ts) if status.online or retained else received_at
        if at > received_at + self._max_future:
            # A clock further ahead than the fixes' future filter allows: a live status is
            # dated when heard; a retained one has no other date, so it says nothing.
            self.stats.status_future += 1
            if retained:
                batch.saw(vehicle_id, received_at)
                return
            at = received_at
        # Evidence is never newer than its arrival: a clock a little ahead must not make
        # later real evidence (a will, the silence sweep) look older than this.
        at = min(at, received_at)
        batch.status_messages.append(StatusMessage(vehicle_id, topic, payload, received_at))
        batch.saw(vehicle_id, received_at, online=status.online, online_at=at)

    def _ack(
        self,
        batch: Batch,
        vehicle_id: str,
        topic: str,
        payload: bytes,
        _retained: bool,  # noqa: FBT001 - positional by the shared handler signature
        received_at: datetime,
    ) -> None:
        ack = decode_ack(payload)
        self.stats.command_acks += 1
        batch.command_acks.append(
            CommandAck(
                vehicle_id,
                ack.cmd_id,
                ack.status.value,
                ack.reason,
                ack.locked,
                received_at,
                topic,
                payload,
            )
        )
        batch.saw(vehicle_id, received_at)


def _is_array(payload: bytes) -> bool:
    """Whether a telemetry message is a JSON array: a unit's backlog (live fixes go one by one)."""
    # No copy unless the message starts with whitespace, which no unit of ours sends.
    return payload.lstrip(_JSON_WHITESPACE)[:1] == b"["


def _row(vehicle_id: str, fix: Telemetry, decision: Decision) -> TelemetryRow:
    """The row to store for a kept fix."""
    extra: dict[str, Any] | None = fix.extras or None
    if fix.queue_dropped is not None:
        extra = {**(extra or {}), "queue_dropped": fix.queue_dropped}
    if decision.own_position or fix.lat is None:
        # The fix's own position, or a status-only fix as the unit sent it (speed may come
        # from the CAN bus without a GPS fix): keep its speed, heading and accuracy.
        speed, heading, accuracy = fix.speed_kmh, fix.heading, fix.accuracy_m
    else:
        # A refused position: speed and heading came with it, so they go too.
        speed = heading = accuracy = None
    notes: dict[str, int] = {}
    if not decision.own_position and decision.position_ts is not None:
        notes["position_ts"] = decision.position_ts
    if decision.ts != fix.ts:
        notes["sent_ts"] = fix.ts
    if notes:
        extra = {**(extra or {}), HUB_NOTES_KEY: notes}
    return TelemetryRow(
        vehicle_id,
        millis_to_datetime(decision.ts),
        fix.seq,
        decision.lat,
        decision.lon,
        speed,
        heading,
        fix.odometer_km,
        fix.fuel_pct,
        fix.battery_pct,
        fix.locked,
        fix.doors_open,
        fix.engine_on,
        fix.alarm,
        accuracy,
        extra,
    )
