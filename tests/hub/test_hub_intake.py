"""Intake: one message in, batch content or a dead letter out (no services)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hub_testing import make_fix

from hub.batch import Batch
from hub.filters import FixFilter, Reason
from hub.intake import HUB_NOTES_KEY, REASON_HUB_ERROR, Intake, millis_to_datetime
from hub.stats import HubStats
from protocol.acks import Ack, AckStatus, encode_ack
from protocol.status import last_will_payload, online_payload
from protocol.telemetry import encode_telemetry, encode_telemetry_batch

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = int(RECEIVED.timestamp() * 1000)


class Everyone:
    """An inventory that knows every vehicle."""

    def __contains__(self, vehicle_id: object) -> bool:
        return True


@pytest.fixture
def intake() -> Intake:
    return Intake(root="fleet", fix_filter=FixFilter(), stats=HubStats(), inventory=Everyone())


def handle(
    intake: Intake, batch: Batch, topic: str, payload: bytes, *, retained: bool = False
) -> None:
    intake.handle(batch, topic, payload, retained=retained, received_at=RECEIVED)


def test_a_fix_becomes_a_row_with_its_unknown_fields_kept(intake: Intake) -> None:
    batch = Batch()
    fix = make_fix(7, NOW - 1000, queue_dropped=3, acme_tpms=[230, 231])
    handle(intake, batch, "fleet/car-1/telemetry", encode_telemetry(fix))
    (row,) = batch.rows
    assert row.vehicle_id == "car-1"
    assert row.ts == millis_to_datetime(NOW - 1000)
    assert (row.seq, row.lat, row.lon, row.speed_kmh) == (7, 31.2304, 121.4737, 30.0)
    assert row.extra == {"acme_tpms": [230, 231], "queue_dropped": 3}
    assert batch.latest == {"car-1": row}
    assert batch.presence["car-1"].online is True
    assert batch.fixes == 1
    assert intake.stats.fixes_received == 1


def test_a_backfill_keeps_the_newest_fix_as_the_state(intake: Intake) -> None:
    batch = Batch()
    fixes = [make_fix(i, NOW - 10_000 + i * 1000) for i in range(5)]
    handle(intake, batch, "fleet/car-1/telemetry", encode_telemetry_batch(fixes))
    assert len(batch.rows) == 5
    assert batch.latest["car-1"].seq == 4
    (message,) = batch.telemetry_messages
    assert (message.first_row, message.end_row) == (0, 5)


def test_a_carried_position_and_a_retimed_fix_are_noted(intake: Intake) -> None:
    batch = Batch()
    handle(intake, batch, "fleet/car-1/telemetry", encode_telemetry(make_fix(1, NOW - 5000)))
    future = NOW + 3_600_000
    changed = make_fix(2, future, lat=None, lon=None, speed_kmh=None, locked=True)
    handle(intake, batch, "fleet/car-1/telemetry", encode_telemetry(changed))
    row = batch.rows[-1]
    assert row.ts == RECEIVED
    assert (row.lat, row.lon) == (31.2304, 121.4737)
    assert row.extra == {HUB_NOTES_KEY: {"position_ts": NOW - 5000, "sent_ts": future}}
    assert intake.stats.kept_for_status[Reason.FUTURE] == 1


def test_a_refused_position_loses_speed_and_heading(intake: Intake) -> None:
    batch = Batch()
    handle(intake, batch, "fleet/car-1/telemetry", encode_telemetry(make_fix(1, NOW - 5000)))
    glitch = make_fix(2, NOW - 4000, lat=0.0, lon=0.0, speed_kmh=80.0, heading=10.0, locked=True)
    handle(intake, batch, "fleet/car-1/telemetry", encode_telemetry(glitch))
    row = batch.rows[-1]
    assert (row.lat, row.lon, row.speed_kmh, row.heading, row.accuracy_m) == (
        31.2304, 121.4737, None, None, None,
    )  # fmt: skip
    assert row.locked is True
    assert intake.stats.kept_for_status[Reason.INVALID_POSITION] == 1


def test_filtered_fixes_are_counted_and_not_stored(intake: Intake) -> None:
    batch = Batch()
    payload = encode_telemetry(make_fix(1, NOW - 5000))
    handle(intake, batch, "fleet/car-1/telemetry", payload)
    handle(intake, batch, "fleet/car-1/telemetry", payload)
    assert len(batch.rows) == 1
    assert intake.stats.filtered[Reason.DUPLICATE] == 1
    # Heard from all the same.
    assert batch.messages == 2


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("fleet/car-1/telemetry", b"", "bad_json"),
        ("fleet/car-1/telemetry", b'{"seq":1}', "missing_field"),
        ("fleet/car-1/telemetry", b'{"v":2,"seq":1}', "unsupported_version"),
        ("fleet/car-1/status", b'{"online":"yes","ts":1}', "invalid_value"),
        ("fleet/car-1/cmd/ack", b'{"cmd_id":"nope","status":"done","ts":1}', "invalid_value"),
        ("fleet/car-1/cmd", b"{}", "bad_topic"),
        ("other/car-1/telemetry", b"{}", "bad_topic"),
        ("fleet/car 1/telemetry", b"{}", "bad_topic"),
        ("fleet/car-1/telemetry/extra", b"{}", "bad_topic"),
    ],
)
def test_malformed_messages_become_dead_letters(
    intake: Intake, topic: str, payload: bytes, reason: str
) -> None:
    batch = Batch()
    handle(intake, batch, topic, payload)
    (letter,) = batch.dead_letters
    assert (letter.topic, letter.payload, letter.reason) == (topic, payload, reason)
    assert letter.detail
    assert letter.received_at == RECEIVED
    assert not batch.rows
    assert intake.stats.dead_lettered == 1


def test_a_bug_in_a_handler_dead_letters_the_message_and_goes_on(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(intake.fix_filter, "check", broken)
    batch = Batch()
    handle(intake, batch, "fleet/car-1/telemetry", encode_telemetry(make_fix(1, NOW)))
    (letter,) = batch.dead_letters
    assert letter.reason == REASON_HUB_ERROR
    assert "boom" in letter.detail
    assert not batch.rows
    assert intake.stats.handler_errors == 1


def test_nul_characters_never_reach_a_text_column(intake: Intake) -> None:
    batch = Batch()
    handle(intake, batch, "fleet/car-1/telemetry", b'{"seq":"\x00"}')
    assert "\x00" not in batch.dead_letters[0].detail


def test_status_evidence_is_dated_by_the_unit_or_by_arrival(intake: Intake) -> None:
    connected = NOW - 60_000
    batch = Batch()
    handle(intake, batch, "fleet/car-1/status", online_payload(connected))
    assert batch.presence["car-1"].online is True
    assert batch.presence["car-1"].online_at == millis_to_datetime(connected)
    # A live will: its ts is the connect time, so the arrival time dates it.
    handle(intake, batch, "fleet/car-1/status", last_will_payload(connected))
    assert batch.presence["car-1"].online is False
    assert batch.presence["car-1"].online_at == RECEIVED
    # A retained offline replayed on subscribing only has the will's ts.
    other = Batch()
    handle(intake, other, "fleet/car-2/status", last_will_payload(connected), retained=True)
    assert other.presence["car-2"].online_at == millis_to_datetime(connected)


def test_command_acks_are_collected(intake: Intake) -> None:
    batch = Batch()
    cmd_id = uuid.uuid4()
    ack = Ack(cmd_id=cmd_id, status=AckStatus.REJECTED, reason="expired", ts=NOW, locked=True)
    handle(intake, batch, "fleet/car-1/cmd/ack", encode_ack(ack))
    (collected,) = batch.command_acks
    assert (collected.vehicle_id, collected.cmd_id, collected.status, collected.reason) == (
        "car-1", cmd_id, "rejected", "expired",
    )  # fmt: skip
    assert batch.presence["car-1"].seen_at == RECEIVED
    assert batch.presence["car-1"].online_at is None


def test_millis_convert_exactly() -> None:
    assert millis_to_datetime(1_750_000_000_123) == datetime(
        2025, 6, 15, 15, 6, 40, tzinfo=UTC
    ) + timedelta(milliseconds=123)


def test_messages_of_vehicles_not_in_the_inventory_are_held_then_settled() -> None:
    intake = Intake(root="fleet", fix_filter=FixFilter(), stats=HubStats(), inventory={"car-1"})
    batch = Batch()
    fix = encode_telemetry(make_fix(1, NOW - 1000))
    for car in ("car-1", "car-2", "car-3", "car-4"):
        handle(intake, batch, f"fleet/{car}/telemetry", fix)
    # Only the known car's fix went through the filters; the others wait, as they came.
    assert [row.vehicle_id for row in batch.rows] == ["car-1"]
    assert [held.topic.vehicle_id for held in batch.held] == ["car-2", "car-3", "car-4"]
    assert intake.fix_filter.track("car-2") is None
    assert batch.bytes == 4 * len(fix)
    # The writer asked the database: car-2 was just added, car-3 is retired, car-4 unknown.
    intake.admit(batch, {"car-3": "retired", "car-4": "not in the inventory"})
    assert batch.held == []
    assert [row.vehicle_id for row in batch.rows] == ["car-1", "car-2"]
    assert [(d.topic, d.reason, d.detail) for d in batch.dead_letters] == [
        ("fleet/car-3/telemetry", "unknown_vehicle", "vehicle 'car-3': retired"),
        ("fleet/car-4/telemetry", "unknown_vehicle", "vehicle 'car-4': not in the inventory"),
    ]
    assert intake.stats.unknown_vehicle == 2
    assert intake.stats.messages_received == 4


def test_a_status_is_never_dated_after_its_arrival(intake: Intake) -> None:
    batch = Batch()
    # A little ahead, inside the future bound: dated on arrival.
    handle(intake, batch, "fleet/car-1/status", online_payload(NOW + 60_000))
    assert batch.presence["car-1"].online_at == RECEIVED
    # A year ahead, live: dated on arrival, and counted.
    handle(intake, batch, "fleet/car-2/status", online_payload(NOW + 365 * 86_400_000))
    assert batch.presence["car-2"].online_at == RECEIVED
    # A year ahead and retained: no date to trust, no evidence.
    handle(
        intake,
        batch,
        "fleet/car-3/status",
        last_will_payload(NOW + 365 * 86_400_000),
        retained=True,
    )
    assert batch.presence["car-3"].online is None
    assert intake.stats.status_future == 2


# --- what a batch handled, for storage acknowledgements (contract 1.1) ------------------------


def refs_of(batch: Batch, vehicle_id: str) -> list[tuple[int, int]]:
    return [(ref.queue_id, ref.seq) for ref in batch.handled.by_vehicle[vehicle_id].refs]


def test_every_fix_of_a_message_is_handled_whether_kept_or_dropped(intake: Intake) -> None:
    batch = Batch()
    topic = "fleet/car-1/telemetry"
    handle(intake, batch, topic, encode_telemetry(make_fix(0, NOW - 5000, queue_id=9)))
    # A repeat (dropped as a duplicate) and a fix at (0, 0) (dropped as invalid): handled too.
    handle(intake, batch, topic, encode_telemetry(make_fix(0, NOW - 5000, queue_id=9)))
    handle(
        intake, batch, topic, encode_telemetry(make_fix(1, NOW - 4000, lat=0, lon=0, queue_id=9))
    )
    backlog = [make_fix(seq, NOW - 4000 + seq, queue_id=9, queue_floor=2) for seq in (2, 3)]
    handle(intake, batch, topic, encode_telemetry_batch(backlog))
    assert len(batch.rows) == 3
    assert refs_of(batch, "car-1") == [(9, 0), (9, 0), (9, 1), (9, 2), (9, 3)]
    handled = batch.handled.by_vehicle["car-1"]
    assert (handled.messages, handled.backlog_messages) == (4, 1)
    assert handled.refs[-1].floor == 2


def test_a_message_that_cannot_be_decoded_is_handled_as_far_as_it_can_be_read(
    intake: Intake,
) -> None:
    batch = Batch()
    good = make_fix(4, NOW - 1000, queue_id=9).model_dump(mode="json")
    bad = {**good, "seq": 5, "lat": 999}  # out of range: the whole message is refused
    payload = json.dumps([good, bad, {"seq": 6}]).encode()
    handle(intake, batch, "fleet/car-1/telemetry", payload)
    assert [letter.reason for letter in batch.dead_letters] == ["out_of_range"]
    assert refs_of(batch, "car-1") == [(9, 4), (9, 5)]  # the third names no queue
    assert batch.handled.by_vehicle["car-1"].backlog_messages == 1
    handle(intake, batch, "fleet/car-2/telemetry", b"\xff not json")
    assert "car-2" not in batch.handled.by_vehicle


def test_units_of_revision_1_0_and_unknown_vehicles_are_not_recorded() -> None:
    intake = Intake(root="fleet", fix_filter=FixFilter(), stats=HubStats(), inventory={"car-1"})
    batch = Batch()
    handle(intake, batch, "fleet/car-1/telemetry", encode_telemetry(make_fix(1, NOW - 1000)))
    assert batch.rows
    assert batch.handled.by_vehicle == {}  # no queue_id: no watermark, no word
    handle(intake, batch, "fleet/car-9/telemetry", encode_telemetry(make_fix(1, NOW, queue_id=3)))
    intake.admit(batch, {"car-9": "not in the inventory"})
    assert batch.handled.by_vehicle == {}


def test_nothing_is_recorded_with_storage_acknowledgements_off() -> None:
    intake = Intake(
        root="fleet",
        fix_filter=FixFilter(),
        stats=HubStats(),
        inventory=Everyone(),
        storage_acks=False,
    )
    batch = Batch()
    handle(intake, batch, "fleet/car-1/telemetry", encode_telemetry(make_fix(1, NOW, queue_id=3)))
    handle(intake, batch, "fleet/car-1/telemetry", b'[{"seq": 2, "queue_id": 3, "ts": 5}]')
    assert len(batch.rows) == 1
    assert batch.handled.by_vehicle == {}
