"""Turn one received MQTT message into batch content: rows, state, presence or a dead letter.

Runs on the MQTT thread for every message, so it does the least that is correct: parse the
topic, decode with the protocol package, run the filters, build rows. Anything a message
gets wrong (bad topic, bad payload) becomes a dead letter; anything the hub gets wrong (a
bug in a handler) is logged and dead-lettered too, so one message can never stop ingest.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from db.telemetry import TelemetryRow
from hub.batch import CommandAck, DeadLetter, TelemetryMessage
from protocol.acks import decode_ack
from protocol.errors import ProtocolError, TopicError
from protocol.status import decode_status
from protocol.telemetry import decode_telemetry
from protocol.topics import Topic, TopicKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from hub.batch import Batch
    from hub.filters import Decision, FixFilter
    from hub.stats import HubStats
    from protocol.telemetry import Telemetry

log = logging.getLogger(__name__)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS: Final = timedelta(milliseconds=1)

# Dead-letter reason for a message the hub itself failed on (a bug, not the sender's fault).
REASON_HUB_ERROR: Final = "hub_error"
# Key of the hub's own notes in `telemetry.extra`, apart from the unit's unknown fields:
# `position_ts` when the position was carried over from an earlier fix, `sent_ts` when the
# fix was re-timed to the hub's clock because the unit's clock was in the future.
HUB_NOTES_KEY: Final = "_hub"
# Longest exception text kept in a dead letter's detail.
_DETAIL_LIMIT: Final = 500
# Parsed topics are cached (a vehicle has three); the cache starts over past this many, so
# a flood of bogus topics cannot grow it without bound.
_TOPIC_CACHE_LIMIT: Final = 100_000


def millis_to_datetime(ms: int) -> datetime:
    """An epoch-milliseconds timestamp as an aware UTC datetime, exactly."""
    return EPOCH + timedelta(milliseconds=ms)


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; an error may quote one from a hostile payload.
    return text.replace("\x00", "\\x00")[:_DETAIL_LIMIT]


class Intake:
    """Decodes and filters messages into the current batch; one instance, one thread."""

    def __init__(self, *, root: str, fix_filter: FixFilter, stats: HubStats) -> None:
        self.root = root
        self.fix_filter = fix_filter
        self.stats = stats
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
        """Process one message into `batch`; never raises."""
        batch.messages += 1
        self.stats.messages_received += 1
        try:
            parsed = self._topics.get(topic) or self._parse(topic)
            handler = self._handlers.get(parsed.kind)
            if handler is None:
                raise TopicError(f"the hub does not consume {parsed.kind.value!r} topics")
        except ProtocolError as exc:
            self._dead_letter(
                batch, topic, payload, reason=exc.code, detail=exc.message, received_at=received_at
            )
            return
        try:
            handler(batch, parsed.vehicle_id, topic, payload, retained, received_at)
        except ProtocolError as exc:
            self._dead_letter(
                batch, topic, payload, reason=exc.code, detail=exc.message, received_at=received_at
            )
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
        batch.dead_letters.append(
            DeadLetter(_clean(topic), payload, reason, _clean(detail), received_at)
        )

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
        stats = self.stats
        stats.fixes_received += len(fixes)
        batch.fixes += len(fixes)
        now_ms = (received_at - EPOCH) // ONE_MS
        check = self.fix_filter.check
        kept: list[TelemetryRow] = []
        for fix in fixes:
            decision = check(vehicle_id, fix, now_ms)
            if decision.reason is not None:
                counts = stats.kept_for_status if decision.keep else stats.filtered
                counts[decision.reason] += 1
            if decision.keep:
                kept.append(_row(vehicle_id, fix, decision))
        first = len(batch.rows)
        for row in kept:
            batch.keep_row(row)
        if kept:
            batch.telemetry_messages.append(
                TelemetryMessage(topic, payload, received_at, first, len(batch.rows))
            )
        # Telemetry is the best evidence a vehicle is connected: it clears a silence-offline.
        batch.saw(vehicle_id, received_at, online=True, online_at=received_at)

    def _status(
        self,
        batch: Batch,
        vehicle_id: str,
        _topic: str,
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
        batch.saw(vehicle_id, received_at, online=status.online, online_at=at)

    def _ack(
        self,
        batch: Batch,
        vehicle_id: str,
        _topic: str,
        payload: bytes,
        _retained: bool,  # noqa: FBT001 - positional by the shared handler signature
        received_at: datetime,
    ) -> None:
        ack = decode_ack(payload)
        self.stats.command_acks += 1
        batch.command_acks.append(
            CommandAck(
                vehicle_id, ack.cmd_id, ack.status.value, ack.reason, ack.locked, received_at
            )
        )
        batch.saw(vehicle_id, received_at)


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
