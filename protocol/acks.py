"""Command acknowledgements a vehicle publishes on `fleet/{vid}/cmd/ack`."""

from enum import StrEnum
from typing import Final
from uuid import UUID

from pydantic import TypeAdapter

from protocol.decoding import validate_json
from protocol.schema import PROTOCOL_VERSION, EpochMillis, ProtocolModel, ProtocolVersion

# Reasons an agent gives for rejecting a command on its own judgement. A command that fails
# verification is rejected with the ProtocolError's code instead ("expired", "wrong_vehicle"...).
REASON_UNSAFE_WHILE_MOVING: Final = "unsafe_while_moving"
REASON_UNSUPPORTED_ACTION: Final = "unsupported_action"


class AckStatus(StrEnum):
    """Outcome of a command on the vehicle."""

    DONE = "done"
    # Refused before acting: verification failed, duplicate policy, unsafe while moving...
    REJECTED = "rejected"
    # Accepted but the vehicle could not carry it out (actuator fault, timeout).
    FAILED = "failed"


class Ack(ProtocolModel):
    """A vehicle's answer to one command, matched to it by `cmd_id`."""

    v: ProtocolVersion = PROTOCOL_VERSION
    cmd_id: UUID
    status: AckStatus
    # A machine-readable code (see docs/protocol.md) when rejected or failed; null when done.
    reason: str | None = None
    ts: EpochMillis
    # Lock state after handling the command, when the unit knows it.
    locked: bool | None = None


_ACK: Final = TypeAdapter(Ack)


def encode_ack(ack: Ack) -> bytes:
    """Encode an ack as compact JSON (`reason` and `locked` always present, possibly null)."""
    return _ACK.dump_json(ack)


def decode_ack(payload: bytes) -> Ack:
    """Decode an ack, raising a PayloadError subclass if it breaks the contract."""
    return validate_json(_ACK, payload, what="ack")
