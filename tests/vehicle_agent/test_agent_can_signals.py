"""The DBC signal mapping and status decoding of the CAN backend, without a bus."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.commands import Action
from vehicle_agent.backends.base import VehicleStatus
from vehicle_agent.backends.can_signals import (
    DEFAULT_REQUESTS,
    SAMPLE_DBC,
    CanConfigError,
    CanRequest,
    CanSignals,
    SignalMap,
    StatusState,
    load_dbc,
)

if TYPE_CHECKING:
    from pathlib import Path

    from cantools.database.can import Database

DB = load_dbc()
BODY = DB.get_message_by_name("BODY_STATUS")
ENERGY = DB.get_message_by_name("ENERGY_STATUS")
DOORS = ("DoorFrontLeft", "DoorFrontRight", "DoorRearLeft", "DoorRearRight", "Tailgate", "Bonnet")

no_deadline = settings(deadline=None)


def body(**values: int) -> bytes:
    signals = dict.fromkeys((s.name for s in BODY.signals), 0) | values
    return bytes(BODY.encode(signals))


def energy(fuel: float = 50.0, battery: float = 75.0, odometer: float = 1000.0) -> bytes:
    values = {"FuelLevel": fuel, "BatterySoC": battery, "Odometer": odometer}
    return bytes(ENERGY.encode(values, strict=False))


def state(signals: CanSignals | None = None, database: Database = DB) -> StatusState:
    return StatusState(SignalMap(database, signals or CanSignals()))


def test_no_status_until_both_messages_arrived() -> None:
    status = state()
    assert status.status() is None
    assert status.feed(BODY.frame_id, body(Locked=1))
    assert status.status() is None
    assert status.missing() == [
        "ENERGY_STATUS.Odometer",
        "ENERGY_STATUS.FuelLevel or ENERGY_STATUS.BatterySoC",
    ]
    assert status.feed(ENERGY.frame_id, energy())
    assert status.status() == VehicleStatus(
        locked=True,
        doors_open=False,
        engine_on=False,
        odometer_km=1000.0,
        fuel_pct=50.0,
        battery_pct=75.0,
        alarm=False,
    )


def test_unwatched_short_and_extended_frames_are_ignored() -> None:
    status = state()
    assert not status.feed(0x123, b"\x00")
    assert not status.feed(BODY.frame_id, body(), extended=True)  # same number, other frame
    assert not status.feed(ENERGY.frame_id, b"\x01")  # shorter than the DBC's 8 bytes
    assert status.raw == {}


def test_a_not_available_level_keeps_the_last_valid_one() -> None:
    status = state()
    status.feed(BODY.frame_id, body())
    status.feed(ENERGY.frame_id, energy(fuel=40.0, battery=60.0))
    status.feed(ENERGY.frame_id, energy(fuel=127.5, battery=127.5, odometer=1001.0))  # raw 0xFF
    current = status.status()
    assert current is not None
    assert (current.fuel_pct, current.battery_pct, current.odometer_km) == (40.0, 60.0, 1001.0)


def test_one_valid_level_is_enough_for_a_hybrid() -> None:
    status = state()
    status.feed(BODY.frame_id, body())
    status.feed(ENERGY.frame_id, energy(battery=127.5))  # the battery never reads
    current = status.status()
    assert current is not None
    assert (current.fuel_pct, current.battery_pct) == (50.0, None)


def test_unmapped_levels_and_alarm_are_none() -> None:
    status = state(CanSignals(battery_pct=None, alarm=None))
    status.feed(BODY.frame_id, body(AlarmActive=1))
    status.feed(ENERGY.frame_id, energy())
    current = status.status()
    assert current is not None
    assert (current.battery_pct, current.alarm) == (None, None)


@no_deadline
@given(
    locked=st.booleans(),
    doors=st.lists(st.booleans(), min_size=len(DOORS), max_size=len(DOORS)),
    engine_on=st.booleans(),
    alarm=st.booleans(),
    fuel_raw=st.integers(0, 200),
    battery_raw=st.integers(0, 200),
    odometer_raw=st.integers(0, 2**32 - 1),
)
def test_every_status_the_dbc_can_carry_decodes_exactly(
    *,
    locked: bool,
    doors: list[bool],
    engine_on: bool,
    alarm: bool,
    fuel_raw: int,
    battery_raw: int,
    odometer_raw: int,
) -> None:
    status = state()
    flags = dict(zip(DOORS, map(int, doors), strict=True))
    status.feed(
        BODY.frame_id,
        body(Locked=int(locked), EngineOn=int(engine_on), AlarmActive=int(alarm), **flags),
    )
    status.feed(ENERGY.frame_id, energy(fuel_raw * 0.5, battery_raw * 0.5, odometer_raw * 0.1))
    assert status.status() == VehicleStatus(
        locked=locked,
        doors_open=any(doors),
        engine_on=engine_on,
        odometer_km=pytest.approx(odometer_raw * 0.1),  # type: ignore[arg-type]
        fuel_pct=fuel_raw * 0.5,
        battery_pct=battery_raw * 0.5,
        alarm=alarm,
    )


@no_deadline
@given(
    frame_id=st.sampled_from([BODY.frame_id, ENERGY.frame_id, 0x300, 0]), data=st.binary(max_size=8)
)
def test_any_frame_is_harmless(frame_id: int, data: bytes) -> None:
    status = state()
    status.feed(frame_id, data)
    status.feed(ENERGY.frame_id, energy())
    status.feed(BODY.frame_id, body())
    current = status.status()
    assert current is not None
    assert current.fuel_pct is not None
    assert 0 <= current.fuel_pct <= 100


def test_lock_requests_encode_the_value_descriptions() -> None:
    signals = SignalMap(DB, CanSignals())
    assert signals.requests[Action.LOCK].payload() == b"\x01"
    assert signals.requests[Action.UNLOCK].payload() == b"\x02"


def test_a_confirmation_needs_a_frame_sent_after_the_request() -> None:
    status = state()
    status.feed(BODY.frame_id, body(Locked=1))
    lock = status.signals.requests[Action.LOCK]
    before = status.frames_of(lock)
    assert not status.confirmed(lock, before)  # locked already, but that is old news
    status.feed(BODY.frame_id, body(Locked=1))
    assert status.confirmed(lock, before)
    assert not status.confirmed(status.signals.requests[Action.UNLOCK], before)


def test_a_request_without_confirmation_is_done_once_sent(tmp_path: Path) -> None:
    dbc = tmp_path / "horn.dbc"
    # The sample's status messages, plus a request message with a horn bit.
    request = 'BO_ 1999 HORN_REQUEST: 1 TCU\n SG_ Horn : 2|1@1+ (1,0) [0|1] "" BCM\n'
    dbc.write_text(SAMPLE_DBC.read_text().replace("\nCM_ ", f"\n{request}\nCM_ ", 1))
    signals = SignalMap(
        load_dbc(dbc), CanSignals(), {**DEFAULT_REQUESTS, Action.HONK: CanRequest("Horn", 1)}
    )
    honk = signals.requests[Action.HONK]
    assert honk.payload() == b"\x04"
    assert StatusState(signals).confirmed(honk, 0)


@pytest.mark.parametrize(
    ("signals", "requests", "complaint"),
    [
        (CanSignals(locked="Nope"), DEFAULT_REQUESTS, "no signal named Nope"),
        (CanSignals(locked="BODY_STATUS.Nope"), DEFAULT_REQUESTS, "no signal BODY_STATUS.Nope"),
        (CanSignals(locked="NOPE.Locked"), DEFAULT_REQUESTS, "no signal NOPE.Locked"),
        (CanSignals(fuel_pct=None, battery_pct=None), DEFAULT_REQUESTS, "fuel_pct, battery_pct"),
        (CanSignals(doors_open=()), DEFAULT_REQUESTS, "door"),
        (
            CanSignals(),
            {Action.LOCK: CanRequest("LockRequest", "Bolt")},
            "value description 'Bolt'",
        ),
        (CanSignals(), {Action.LOCK: CanRequest("LockRequest", 1, "Locked")}, "needs a value"),
    ],
)
def test_mistakes_in_the_mapping_are_named(
    signals: CanSignals, requests: dict[Action, CanRequest], complaint: str
) -> None:
    with pytest.raises(CanConfigError, match=complaint):
        SignalMap(DB, signals, requests)


def test_an_ambiguous_name_asks_for_the_message(tmp_path: Path) -> None:
    dbc = tmp_path / "twice.dbc"
    dbc.write_text(
        textwrap.dedent(
            """\
            VERSION ""
            NS_ :
            BS_:
            BU_: A
            BO_ 1 ONE: 1 A
             SG_ Locked : 0|1@1+ (1,0) [0|1] "" A
            BO_ 2 TWO: 1 A
             SG_ Locked : 0|1@1+ (1,0) [0|1] "" A
            """
        )
    )
    with pytest.raises(CanConfigError, match=r"ONE\.Locked, TWO\.Locked"):
        SignalMap(load_dbc(dbc), CanSignals())


def test_a_missing_dbc_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(CanConfigError, match="cannot load"):
        load_dbc(tmp_path / "none.dbc")
