"""Contract 1.1, storage acknowledgement: the `stored` message, the fix fields, salvaging."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from protocol_strategies import fix_dicts, fixes, no_deadline, stored_acks

from protocol.errors import (
    BadJsonError,
    InvalidValueError,
    MissingFieldError,
    OutOfRangeError,
    UnsupportedVersionError,
)
from protocol.schema import MAX_QUEUE_ID
from protocol.stored import FixRef, Stored, decode_stored, encode_stored, salvage_fix_refs
from protocol.telemetry import Telemetry, decode_telemetry, encode_telemetry
from protocol.topics import Topic, TopicKind


def fix(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "seq": 7,
        "ts": 1_750_000_000_000,
        "lat": None,
        "lon": None,
        "speed_kmh": None,
        "heading": None,
        "odometer_km": 1.0,
        "fuel_pct": 50.0,
        "locked": True,
        "doors_open": False,
        "engine_on": False,
    }
    data.update(changes)
    return data


def encode(body: object) -> bytes:
    return json.dumps(body).encode()


@no_deadline
@given(stored_acks)
def test_stored_round_trips(stored: Stored) -> None:
    assert decode_stored(encode_stored(stored)) == stored


def test_stored_on_the_wire() -> None:
    sent = encode_stored(Stored(queue_id=12345, next_seq=1042, ts=1_750_000_000_000))
    assert sent == b'{"v":1,"queue_id":12345,"next_seq":1042,"ts":1750000000000}'


@pytest.mark.parametrize(
    ("payload", "error", "field"),
    [
        (b'{"next_seq": 1, "ts": 5}', MissingFieldError, "queue_id"),
        (b'{"queue_id": 1, "ts": 5}', MissingFieldError, "next_seq"),
        (b'{"queue_id": 0, "next_seq": 1, "ts": 5}', OutOfRangeError, "queue_id"),
        (b'{"queue_id": 2147483648, "next_seq": 1, "ts": 5}', OutOfRangeError, "queue_id"),
        (b'{"queue_id": 1, "next_seq": -1, "ts": 5}', OutOfRangeError, "next_seq"),
        (b'{"queue_id": 1, "next_seq": 1.0, "ts": 5}', InvalidValueError, "next_seq"),
        (b'{"queue_id": "1", "next_seq": 1, "ts": 5}', InvalidValueError, "queue_id"),
        (b'{"v": 2, "queue_id": 1, "next_seq": 1, "ts": 5}', UnsupportedVersionError, "v"),
        (b"stored", BadJsonError, None),
    ],
)
def test_stored_refusals(payload: bytes, error: type[Exception], field: str | None) -> None:
    with pytest.raises(error) as caught:
        decode_stored(payload)
    assert getattr(caught.value, "field", None) == field


def test_the_stored_topic_is_retained_and_parses() -> None:
    topic = Topic.stored("car-42")
    assert topic.value == "fleet/car-42/stored"
    assert topic.retain
    assert topic.qos == 1
    assert Topic.parse("run-1/fleet/car-42/stored", root="run-1/fleet").kind is TopicKind.STORED


def test_a_fix_of_contract_1_0_has_no_queue() -> None:
    (decoded,) = decode_telemetry(encode(fix()))
    assert (decoded.queue_id, decoded.queue_floor) == (None, None)
    assert FixRef.of(decoded) is None
    sent = json.loads(encode_telemetry(decoded))
    assert "queue_id" not in sent
    assert "queue_floor" not in sent


def test_a_fix_names_its_queue_and_floor() -> None:
    (decoded,) = decode_telemetry(encode(fix(queue_id=99, queue_floor=3)))
    assert FixRef.of(decoded) == FixRef(99, 7, 1_750_000_000_000, 3)
    assert decoded.extras == {}  # declared fields, not unknown ones kept for the unit


def test_a_floor_above_the_fixes_own_seq_is_refused() -> None:
    with pytest.raises(OutOfRangeError) as caught:
        decode_telemetry(encode(fix(queue_id=99, queue_floor=8)))
    assert caught.value.field == "queue_floor"
    assert decode_telemetry(encode(fix(queue_id=99, queue_floor=7)))[0].queue_floor == 7


@pytest.mark.parametrize("queue_id", [0, -1, MAX_QUEUE_ID + 1])
def test_a_queue_id_out_of_range_is_refused(queue_id: int) -> None:
    with pytest.raises(OutOfRangeError):
        decode_telemetry(encode(fix(queue_id=queue_id)))


@no_deadline
@given(st.lists(fix_dicts(), min_size=1, max_size=5))
def test_salvage_reads_what_the_decoder_reads(items: list[dict[str, Any]]) -> None:
    decoded = decode_telemetry(encode(items))
    expected = [ref for ref in map(FixRef.of, decoded) if ref is not None]
    assert salvage_fix_refs(encode(items)) == expected


@no_deadline
@given(fixes)
def test_salvage_of_a_single_fix(one: Telemetry) -> None:
    expected = [] if one.queue_id is None else [FixRef.of(one)]
    assert salvage_fix_refs(encode_telemetry(one)) == expected


def test_salvage_keeps_the_readable_fixes_of_a_refused_array() -> None:
    payload = encode(
        [
            fix(seq=1, queue_id=5),
            fix(seq=2, queue_id=5, lat=500),  # refused by the decoder, still readable
            fix(seq=True, queue_id=5),  # a boolean is no seq
            fix(seq=3, queue_id=5, queue_floor=9),  # a floor above its seq is ignored
            fix(seq=4),  # no queue: a unit of contract 1.0
            fix(seq=5, queue_id=5, ts=0),  # no time to tell its queue's age by
            "junk",
        ]
    )
    with pytest.raises(OutOfRangeError):
        decode_telemetry(payload)
    ts = 1_750_000_000_000
    assert salvage_fix_refs(payload) == [
        FixRef(5, 1, ts, None),
        FixRef(5, 2, ts, None),
        FixRef(5, 3, ts, None),
    ]


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\xfe junk", b"[" * 100_000, b'{"seq": 1, "queue_id": 1', b"NaN", b"[]", b"42"],
)
def test_salvage_never_raises(payload: bytes) -> None:
    assert salvage_fix_refs(payload) == []
