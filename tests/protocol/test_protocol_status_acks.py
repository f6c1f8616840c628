"""Status (retained, last will) and command acks: round-trips and refusals."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from protocol_strategies import acks, no_deadline, statuses

from protocol.acks import Ack, AckStatus, decode_ack, encode_ack
from protocol.errors import BadJsonError, InvalidValueError, MissingFieldError, OutOfRangeError
from protocol.status import (
    Status,
    decode_status,
    encode_status,
    last_will_payload,
    online_payload,
)

CMD_ID = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"


@no_deadline
@given(statuses)
def test_status_round_trips(status: Status) -> None:
    assert decode_status(encode_status(status)) == status


def test_last_will_says_offline() -> None:
    sent = json.loads(last_will_payload(1_700_000_000_000))
    assert sent == {"v": 1, "online": False, "ts": 1_700_000_000_000}
    assert not decode_status(last_will_payload(5)).online
    assert decode_status(online_payload(5)).online


def test_status_refusals() -> None:
    with pytest.raises(MissingFieldError) as caught:
        decode_status(b'{"online": true}')
    assert caught.value.field == "ts"
    with pytest.raises(InvalidValueError):
        decode_status(b'{"online": "yes", "ts": 5}')
    with pytest.raises(OutOfRangeError):
        decode_status(b'{"online": true, "ts": 0}')
    with pytest.raises(BadJsonError):
        decode_status(b"online")


def test_status_keeps_unknown_fields() -> None:
    status = decode_status(b'{"online": true, "ts": 5, "ip": "10.0.0.7"}')
    assert status.extras == {"ip": "10.0.0.7"}


@no_deadline
@given(acks)
def test_ack_round_trips(ack: Ack) -> None:
    assert decode_ack(encode_ack(ack)) == ack


def test_ack_always_writes_reason_and_locked() -> None:
    sent = json.loads(
        encode_ack(decode_ack(f'{{"cmd_id":"{CMD_ID}","status":"done","ts":9}}'.encode()))
    )
    assert sent["reason"] is None
    assert sent["locked"] is None


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        ('{"status": "done", "ts": 9}', MissingFieldError, "cmd_id"),
        ('{"cmd_id": "not-a-uuid", "status": "done", "ts": 9}', InvalidValueError, "cmd_id"),
        (f'{{"cmd_id": "{CMD_ID}", "status": "ok", "ts": 9}}', InvalidValueError, "status"),
        (f'{{"cmd_id": "{CMD_ID}", "status": "done", "ts": 9.5}}', InvalidValueError, "ts"),
        (
            f'{{"cmd_id": "{CMD_ID}", "status": "done", "ts": 9, "locked": 1}}',
            InvalidValueError,
            "locked",
        ),
        (
            f'{{"cmd_id": "{CMD_ID}", "status": "failed", "ts": 9, "reason": 3}}',
            InvalidValueError,
            "reason",
        ),
    ],
)
def test_ack_refusals(body: str, error: type[Exception], field: str) -> None:
    with pytest.raises(error) as caught:
        decode_ack(body.encode())
    assert getattr(caught.value, "field", None) == field


def test_ack_status_values() -> None:
    assert {status.value for status in AckStatus} == {"done", "rejected", "failed"}
