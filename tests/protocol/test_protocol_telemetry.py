"""Telemetry: round-trips, unknown fields kept, and each kind of bad input with its own error."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from protocol_strategies import fix_dicts, fixes, no_deadline

from protocol.errors import (
    BadJsonError,
    InvalidValueError,
    MissingFieldError,
    OutOfRangeError,
    PayloadError,
    UnsupportedVersionError,
)
from protocol.telemetry import (
    MAX_ACCURACY_M,
    MAX_FIXES_PER_MESSAGE,
    Telemetry,
    decode_telemetry,
    encode_telemetry,
    encode_telemetry_batch,
)

REQUIRED = (
    "seq",
    "ts",
    "lat",
    "lon",
    "speed_kmh",
    "heading",
    "odometer_km",
    "locked",
    "doors_open",
    "engine_on",
)

# (field, a value just outside its range)
OUT_OF_RANGE = [
    ("seq", -1),
    ("seq", 2**63),
    ("ts", 0),
    ("ts", -5),
    ("ts", 253_402_300_800_000),
    ("lat", 90.000001),
    ("lat", -91),
    ("lon", 180.5),
    ("lon", -181),
    ("speed_kmh", -0.1),
    ("speed_kmh", 400.1),
    ("heading", -1),
    ("heading", 360.01),
    ("odometer_km", -1),
    ("odometer_km", 10_000_000.1),
    ("odometer_km", 1e300),
    ("fuel_pct", 100.5),
    ("fuel_pct", -1),
    ("battery_pct", 101),
    ("accuracy_m", -0.5),
    ("queue_dropped", -1),
]

# (field, a value of the wrong JSON type)
WRONG_TYPE = [
    ("seq", 1.0),
    ("seq", "1"),
    ("ts", 1.7e12),
    ("ts", True),
    ("lat", "48.1"),
    ("lat", True),
    ("odometer_km", None),
    ("locked", "true"),
    ("locked", 1),
    ("locked", None),
    ("doors_open", 0),
    ("engine_on", "false"),
    ("alarm", "no"),
    ("queue_dropped", 2.5),
    ("v", "1"),
]


def encode(data: Any) -> bytes:
    return json.dumps(data, allow_nan=True).encode()


def a_fix(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "seq": 7,
        "ts": 1_700_000_000_000,
        "lat": 48.137154,
        "lon": 11.576124,
        "speed_kmh": 42.5,
        "heading": 271.3,
        "odometer_km": 12345.6,
        "fuel_pct": 63.5,
        "locked": False,
        "doors_open": False,
        "engine_on": True,
    }
    data.update(changes)
    return data


@no_deadline
@given(fixes)
def test_single_fix_round_trips(fix: Telemetry) -> None:
    assert decode_telemetry(encode_telemetry(fix)) == [fix]


@no_deadline
@given(st.lists(fixes, min_size=1, max_size=6))
def test_backfill_array_round_trips(batch: list[Telemetry]) -> None:
    assert decode_telemetry(encode_telemetry_batch(batch)) == batch


@no_deadline
@given(fix_dicts())
def test_decoding_what_a_unit_sends_keeps_every_field(data: dict[str, Any]) -> None:
    (fix,) = decode_telemetry(encode(data))
    dumped = fix.model_dump()
    for key, value in data.items():
        assert dumped[key] == value


def test_unknown_fields_are_kept_as_extras() -> None:
    payload = encode(a_fix(tire_pressure_kpa=[230, 231, 229, 232], firmware="2.4.1"))
    (fix,) = decode_telemetry(payload)
    assert fix.extras == {"tire_pressure_kpa": [230, 231, 229, 232], "firmware": "2.4.1"}
    assert json.loads(encode_telemetry(fix))["firmware"] == "2.4.1"


def test_encoding_leaves_out_unset_optionals_but_keeps_null_position() -> None:
    fix = Telemetry.model_validate(a_fix(lat=None, lon=None, speed_kmh=None, heading=None))
    sent = json.loads(encode_telemetry(fix))
    assert sent["lat"] is None
    assert sent["lon"] is None
    assert "battery_pct" not in sent
    assert "alarm" not in sent
    assert sent["v"] == 1


def test_status_only_fix_has_no_position() -> None:
    (fix,) = decode_telemetry(encode(a_fix(lat=None, lon=None, speed_kmh=None, heading=None)))
    assert not fix.has_position
    assert fix.locked is False


def test_optional_fields_may_be_null() -> None:
    (fix,) = decode_telemetry(encode(a_fix(alarm=None, accuracy_m=None, battery_pct=None)))
    assert fix.alarm is None


def test_leading_whitespace_before_an_array_is_accepted() -> None:
    assert len(decode_telemetry(b" \n" + encode([a_fix(), a_fix(seq=8)]))) == 2


@no_deadline
@given(st.data())
def test_truncated_message_is_bad_json(data: st.DataObject) -> None:
    payload = encode_telemetry(data.draw(fixes))
    cut = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    with pytest.raises(BadJsonError) as caught:
        decode_telemetry(payload[:cut])
    assert caught.value.code == "bad_json"


@pytest.mark.parametrize("payload", [b"", b"   ", b"\xff\xfe", b"{'seq': 1}", b"[{]"])
def test_garbage_is_bad_json(payload: bytes) -> None:
    with pytest.raises(BadJsonError):
        decode_telemetry(payload)


@pytest.mark.parametrize("payload", [b"5", b'"fix"', b"null", b"true", b"NaN"])
def test_json_that_is_not_an_object_is_invalid(payload: bytes) -> None:
    with pytest.raises(InvalidValueError):
        decode_telemetry(payload)


@no_deadline
@given(fix_dicts(with_extras=False), st.sampled_from(REQUIRED))
def test_missing_required_field_is_named(data: dict[str, Any], field: str) -> None:
    del data[field]
    with pytest.raises(MissingFieldError) as caught:
        decode_telemetry(encode(data))
    assert caught.value.field == field
    assert caught.value.code == "missing_field"


def test_fuel_and_battery_both_missing_is_a_missing_field() -> None:
    data = a_fix()
    del data["fuel_pct"]
    with pytest.raises(MissingFieldError) as caught:
        decode_telemetry(encode(data))
    assert caught.value.field == "fuel_pct|battery_pct"


def test_fuel_and_battery_both_null_is_a_missing_field() -> None:
    with pytest.raises(MissingFieldError):
        decode_telemetry(encode(a_fix(fuel_pct=None, battery_pct=None)))


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE)
def test_out_of_range_value_is_named(field: str, value: float) -> None:
    with pytest.raises(OutOfRangeError) as caught:
        decode_telemetry(encode(a_fix(**{field: value})))
    assert caught.value.field == field
    assert caught.value.code == "out_of_range"


@no_deadline
@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not -90 <= x <= 90))
def test_any_latitude_outside_the_globe_is_out_of_range(latitude: float) -> None:
    with pytest.raises(OutOfRangeError):
        decode_telemetry(encode(a_fix(lat=latitude)))


@pytest.mark.parametrize(("field", "value"), WRONG_TYPE)
def test_wrong_type_is_an_invalid_value(field: str, value: object) -> None:
    with pytest.raises(InvalidValueError) as caught:
        decode_telemetry(encode(a_fix(**{field: value})))
    assert caught.value.field == field
    assert caught.value.code == "invalid_value"


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("field", ["lat", "odometer_km", "extra_sensor"])
def test_nan_and_infinity_are_refused(token: bytes, field: str) -> None:
    payload = encode(a_fix(**{field: "PLACEHOLDER"})).replace(b'"PLACEHOLDER"', token)
    with pytest.raises(InvalidValueError) as caught:
        decode_telemetry(payload)
    assert caught.value.field == field


def test_nan_nested_inside_an_extra_is_refused_with_its_path() -> None:
    payload = encode(a_fix(sensors={"temps": [21.5, "X"]})).replace(b'"X"', b"NaN")
    with pytest.raises(InvalidValueError) as caught:
        decode_telemetry(payload)
    assert caught.value.field == "sensors.temps.1"


@pytest.mark.parametrize(("lat", "lon"), [(48.1, None), (None, 11.5)])
def test_lat_and_lon_must_be_null_together(lat: float | None, lon: float | None) -> None:
    with pytest.raises(InvalidValueError) as caught:
        decode_telemetry(encode(a_fix(lat=lat, lon=lon)))
    assert caught.value.field == ("lon" if lon is None else "lat")


@no_deadline
@given(st.integers().filter(lambda version: version != 1))
def test_other_protocol_versions_are_unsupported(version: int) -> None:
    with pytest.raises(UnsupportedVersionError) as caught:
        decode_telemetry(encode(a_fix(v=version)))
    assert caught.value.code == "unsupported_version"


def test_unsupported_version_wins_over_other_field_errors() -> None:
    data = a_fix(v=2, position={"lat": 1, "lon": 2})
    del data["lat"]
    with pytest.raises(UnsupportedVersionError):
        decode_telemetry(encode(data))


@no_deadline
@given(st.lists(fix_dicts(with_extras=False), min_size=1, max_size=10), st.data())
def test_array_error_names_the_failing_element(
    batch: list[dict[str, Any]], data: st.DataObject
) -> None:
    bad = data.draw(st.integers(min_value=0, max_value=len(batch) - 1))
    batch[bad]["heading"] = 361
    with pytest.raises(OutOfRangeError) as caught:
        decode_telemetry(encode(batch))
    assert caught.value.index == bad
    assert caught.value.field == "heading"
    assert f"[{bad}]" in str(caught.value)


def test_array_cross_field_error_names_element_and_field() -> None:
    with pytest.raises(InvalidValueError) as caught:
        decode_telemetry(encode([a_fix(), a_fix(lon=None)]))
    assert (caught.value.index, caught.value.field) == (1, "lon")


def test_empty_array_is_refused() -> None:
    with pytest.raises(OutOfRangeError):
        decode_telemetry(b"[]")


def test_array_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(OutOfRangeError):
        decode_telemetry(encode([a_fix(seq=i) for i in range(MAX_FIXES_PER_MESSAGE + 1)]))


def test_every_payload_error_is_a_payload_error() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_telemetry(b"{")
    assert caught.value.as_dict()["code"] == "bad_json"


# --- accuracy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("accuracy", [MAX_ACCURACY_M + 1, 1e300, 1.7976931348623157e308])
def test_an_accuracy_beyond_the_earth_is_clamped_to_the_farthest_distance_on_it(
    accuracy: float,
) -> None:
    payload = encode(a_fix(accuracy_m=accuracy))
    (fix,) = decode_telemetry(payload)
    assert fix.accuracy_m == MAX_ACCURACY_M
    # What the hub stores (a float4 column) is a number, not Infinity.
    assert math.isfinite(struct.unpack("f", struct.pack("f", fix.accuracy_m))[0])
    assert json.loads(encode_telemetry(fix))["accuracy_m"] == MAX_ACCURACY_M


def test_the_farthest_distance_on_earth_is_half_a_great_circle() -> None:
    # No two places are farther apart on the mean sphere the hub measures with.
    assert math.pi * 6_371_008.8 <= MAX_ACCURACY_M < math.pi * 6_371_008.8 + 1_000


@no_deadline
@given(st.floats(0, MAX_ACCURACY_M))
def test_an_accuracy_on_the_earth_is_kept_as_sent(accuracy: float) -> None:
    (fix,) = decode_telemetry(encode(a_fix(accuracy_m=accuracy)))
    assert fix.accuracy_m == accuracy


def test_a_unit_that_builds_a_fix_with_a_huge_accuracy_sends_the_bound() -> None:
    fix = Telemetry.model_validate(a_fix(accuracy_m=1e300))
    assert fix.accuracy_m == MAX_ACCURACY_M
