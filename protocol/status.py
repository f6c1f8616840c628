"""Online/offline status on `fleet/{vid}/status`: retained, and the unit's MQTT last will."""

from __future__ import annotations

from typing import Final

from pydantic import TypeAdapter

from protocol.decoding import validate_json
from protocol.schema import PROTOCOL_VERSION, EpochMillis, ProtocolModel, ProtocolVersion


class Status(ProtocolModel):
    """Whether a unit is connected, as of `ts`."""

    v: ProtocolVersion = PROTOCOL_VERSION
    online: bool
    ts: EpochMillis


_STATUS: Final = TypeAdapter(Status)


def encode_status(status: Status) -> bytes:
    """Encode a status message as compact JSON."""
    return _STATUS.dump_json(status)


def decode_status(payload: bytes) -> Status:
    """Decode a status message, raising a PayloadError subclass if it breaks the contract."""
    return validate_json(_STATUS, payload, what="status")


def online_payload(ts: int) -> bytes:
    """Bytes a unit publishes (retained) on its status topic right after connecting."""
    return encode_status(Status(online=True, ts=ts))


def last_will_payload(ts: int) -> bytes:
    """Bytes to register as the unit's last will (retained) on its status topic.

    The broker publishes them only later, when the connection is lost, so `ts` is the time the
    will was registered (connect time), not the time the unit went offline.
    """
    return encode_status(Status(online=False, ts=ts))
