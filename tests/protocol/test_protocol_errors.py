"""Error codes are stable and distinct: the hub and agents key on them."""

from __future__ import annotations

from protocol import errors

EXPECTED_CODES = {
    errors.BadJsonError: "bad_json",
    errors.MissingFieldError: "missing_field",
    errors.OutOfRangeError: "out_of_range",
    errors.InvalidValueError: "invalid_value",
    errors.UnsupportedVersionError: "unsupported_version",
    errors.TopicError: "bad_topic",
    errors.WrongVehicleError: "wrong_vehicle",
    errors.ForgedSignatureError: "forged_signature",
    errors.CommandExpiredError: "expired",
    errors.UnknownKeyError: "unknown_key",
    errors.MalformedTokenError: "malformed_token",
    errors.CommandNotYetValidError: "not_yet_valid",
    errors.KeyFormatError: "bad_key",
}


def all_error_classes() -> list[type[errors.ProtocolError]]:
    found: list[type[errors.ProtocolError]] = []
    pending: list[type[errors.ProtocolError]] = [errors.ProtocolError]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(current.__subclasses__())
    return found


def test_codes_are_the_published_ones() -> None:
    for error_class, code in EXPECTED_CODES.items():
        assert error_class.code == code
        assert issubclass(error_class, errors.ProtocolError)


def test_codes_are_unique() -> None:
    codes = [error_class.code for error_class in all_error_classes()]
    assert len(codes) == len(set(codes))


def test_error_carries_field_and_index() -> None:
    error = errors.OutOfRangeError("telemetry[2].lat: too big", field="lat", index=2)
    assert error.as_dict() == {
        "code": "out_of_range",
        "field": "lat",
        "index": 2,
        "message": "telemetry[2].lat: too big",
    }
    assert str(error) == "telemetry[2].lat: too big"
