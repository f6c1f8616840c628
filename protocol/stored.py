"""Storage acknowledgements on `fleet/{vid}/stored` (contract 1.1): what the hub has stored.

A broker's PUBACK only says the broker has a fix; a broker that crashes before it saved its
state loses it. So a unit that announces its queue (`queue_id` in its fixes) keeps every
published fix until the hub says, on this retained topic, "every fix of queue `queue_id`
with a `seq` below `next_seq` is handled": stored, or refused for good (a duplicate, a
filter drop, a dead letter). `FixRef` is what the hub needs of a fix to say that, including
the fixes of a message it could only dead-letter (`salvage_fix_refs`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final, NamedTuple

from pydantic import TypeAdapter

from protocol.decoding import validate_json
from protocol.schema import (
    MAX_BIGINT,
    MAX_EPOCH_MILLIS,
    MAX_QUEUE_ID,
    PROTOCOL_VERSION,
    Counter,
    EpochMillis,
    ProtocolModel,
    ProtocolVersion,
    QueueId,
)
from protocol.telemetry import MAX_FIXES_PER_MESSAGE

if TYPE_CHECKING:
    from protocol.telemetry import Telemetry


class Stored(ProtocolModel):
    """The hub's word on one queue of a vehicle: every seq below `next_seq` is handled."""

    v: ProtocolVersion = PROTOCOL_VERSION
    queue_id: QueueId
    # The lowest seq the hub still waits for; 0 when it has nothing below a gap yet.
    next_seq: Counter
    # When the hub published this (its clock), for people reading retained messages.
    ts: EpochMillis


_STORED: Final = TypeAdapter(Stored)


def encode_stored(stored: Stored) -> bytes:
    """Encode a storage acknowledgement as compact JSON."""
    return _STORED.dump_json(stored)


def decode_stored(payload: bytes) -> Stored:
    """Decode a storage acknowledgement, raising a PayloadError subclass if it is not one."""
    return validate_json(_STORED, payload, what="stored")


class FixRef(NamedTuple):
    """What acknowledging one fix needs: its queue, its seq, its time, the floor it carried.

    The time (the fix's own `ts`, the unit's clock) tells a new queue of a vehicle from an
    old one whose fixes arrive late: the newer queue's fixes are the later ones.
    """

    queue_id: int
    seq: int
    ts: int
    floor: int | None

    @classmethod
    def of(cls, fix: Telemetry) -> FixRef | None:
        """The reference of a decoded fix; None for a unit that does not announce its queue."""
        if fix.queue_id is None:
            return None
        return cls(fix.queue_id, fix.seq, fix.ts, fix.queue_floor)


def _int_in(value: object, low: int, high: int) -> int | None:
    # `type(...) is int`: JSON's true and false are Python ints too, and are no seq.
    if type(value) is int and low <= value <= high:
        return value
    return None


def _salvage_one(item: object) -> FixRef | None:
    if not isinstance(item, dict):
        return None
    queue_id = _int_in(item.get("queue_id"), 1, MAX_QUEUE_ID)
    seq = _int_in(item.get("seq"), 0, MAX_BIGINT)
    ts = _int_in(item.get("ts"), 1, MAX_EPOCH_MILLIS)
    if queue_id is None or seq is None or ts is None:
        return None
    floor = _int_in(item.get("queue_floor"), 0, seq)
    return FixRef(queue_id, seq, ts, floor)


def salvage_fix_refs(payload: bytes) -> list[FixRef]:
    """The fixes a refused telemetry message names, as far as they can be read; never raises.

    A message the hub dead-letters is refused for good: the unit sending it again cannot
    help, so the hub acknowledges what it can still read of it (each element that has an
    integer `queue_id`, `seq` and `ts` in range) rather than leave a gap the unit re-sends
    forever.
    """
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
        return []
    items = body[:MAX_FIXES_PER_MESSAGE] if isinstance(body, list) else [body]
    return [ref for ref in map(_salvage_one, items) if ref is not None]
