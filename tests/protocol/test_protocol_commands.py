"""Command signing and verification: round-trips, rotation and every refusal with its own error."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pyseto
import pytest
from hypothesis import given
from hypothesis import strategies as st
from protocol_strategies import no_deadline, vehicle_ids

from protocol import base64url
from protocol.commands import ACTIONS_REFUSED_WHILE_MOVING, Action, CommandClaims
from protocol.errors import (
    BadJsonError,
    CommandExpiredError,
    CommandNotYetValidError,
    CommandVerificationError,
    ForgedSignatureError,
    InvalidValueError,
    MalformedTokenError,
    MissingFieldError,
    OutOfRangeError,
    UnknownKeyError,
    UnsupportedVersionError,
    WrongVehicleError,
)
from protocol.keys import SigningKey
from protocol.schema import MAX_COMMAND_TTL_S
from protocol.signing import DEFAULT_CLOCK_SKEW_S, CommandSigner, CommandVerifier

# Keys are generated once: Ed25519 generation is cheap, but hypothesis runs many examples.
HUB_KEY = SigningKey.generate()
NEXT_HUB_KEY = SigningKey.generate()
ROGUE_KEY = SigningKey.generate()

NOW = 1_750_000_000.0
VEHICLE = "car-42"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sign(action: Action = Action.UNLOCK, *, key: SigningKey = HUB_KEY, ttl_s: int = 30) -> bytes:
    return CommandSigner(key, clock=FakeClock()).sign(VEHICLE, action, ttl_s=ttl_s).payload


def verifier(*keys: SigningKey, now: float = NOW, vehicle_id: str = VEHICLE) -> CommandVerifier:
    trusted = [key.verifying_key for key in keys or (HUB_KEY,)]
    return CommandVerifier(trusted, vehicle_id, clock=FakeClock(now))


def token_of(payload: bytes) -> str:
    token: str = json.loads(payload)["token"]
    return token


def hand_made(
    claims: dict[str, Any], *, key: SigningKey = HUB_KEY, kid: str | None = None
) -> bytes:
    """A token built with the reference library directly, to reach paths our signer avoids."""
    footer = json.dumps({"kid": kid or key.key_id}).encode()
    token = pyseto.encode(key.as_pyseto(), json.dumps(claims).encode(), footer)
    return json.dumps({"token": token.decode()}).encode()


def claims_dict(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "cmd_id": str(uuid.uuid4()),
        "vid": VEHICLE,
        "action": "lock",
        "iat": "2025-06-15T15:06:40+00:00",
        "exp": "2025-06-15T15:07:10+00:00",
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


@no_deadline
@given(
    vehicle_id=vehicle_ids,
    action=st.sampled_from(Action),
    ttl_s=st.integers(min_value=1, max_value=MAX_COMMAND_TTL_S),
    issued=st.floats(min_value=1e9, max_value=4e9),
    elapsed=st.floats(min_value=-DEFAULT_CLOCK_SKEW_S, max_value=0.999),
    cmd_id=st.uuids(),
)
def test_sign_then_verify_round_trips(
    *,
    vehicle_id: str,
    action: Action,
    ttl_s: int,
    issued: float,
    elapsed: float,
    cmd_id: uuid.UUID,
) -> None:
    clock = FakeClock(issued)
    signed = CommandSigner(HUB_KEY, clock=clock).sign(
        vehicle_id, action, ttl_s=ttl_s, cmd_id=cmd_id
    )
    # Anywhere from a skewed clock before issue to just before expiry, the command verifies.
    clock.now = int(issued) + elapsed + (ttl_s - 1 if elapsed > 0 else 0)
    claims = CommandVerifier([HUB_KEY.verifying_key], vehicle_id, clock=clock).verify(
        signed.payload
    )
    assert claims == signed.claims
    assert (claims.cmd_id, claims.vid, claims.action) == (cmd_id, vehicle_id, action)
    assert signed.cmd_id == cmd_id


def test_signer_draws_a_fresh_cmd_id_each_time() -> None:
    signer = CommandSigner(HUB_KEY, clock=FakeClock())
    first = signer.sign(VEHICLE, Action.LOCK, ttl_s=30)
    second = signer.sign(VEHICLE, Action.LOCK, ttl_s=30)
    assert first.cmd_id != second.cmd_id
    assert first.claims.exp.timestamp() - first.claims.iat.timestamp() == 30


def test_message_shape_and_footer() -> None:
    message = json.loads(sign())
    assert list(message) == ["token"]
    header, body, footer = message["token"].rsplit(".", 2)
    assert header == "v4.public"
    assert json.loads(base64url.decode(footer)) == {"kid": HUB_KEY.key_id}
    claims = json.loads(base64url.decode(body)[:-64])
    assert set(claims) == {"v", "cmd_id", "vid", "action", "iat", "exp"}
    assert claims["iat"].endswith("Z")


def test_tokens_verify_with_the_reference_library() -> None:
    # The reference library checks exp against the real clock, so sign with the real clock.
    token = token_of(CommandSigner(HUB_KEY).sign(VEHICLE, Action.UNLOCK, ttl_s=600).payload)
    decoded = pyseto.decode(HUB_KEY.verifying_key.as_pyseto(), token, deserializer=json)
    assert isinstance(decoded.payload, dict)
    assert decoded.payload["vid"] == VEHICLE


def test_key_rotation_accepts_both_trusted_keys() -> None:
    both = verifier(HUB_KEY, NEXT_HUB_KEY)
    assert both.verify(sign(key=HUB_KEY)).vid == VEHICLE
    assert both.verify(sign(key=NEXT_HUB_KEY)).vid == VEHICLE
    assert both.trusted_key_ids == {HUB_KEY.key_id, NEXT_HUB_KEY.key_id}
    with pytest.raises(UnknownKeyError):
        verifier(NEXT_HUB_KEY).verify(sign(key=HUB_KEY))


def test_signature_by_another_key_under_a_trusted_kid_is_forged() -> None:
    payload = hand_made(claims_dict(), key=ROGUE_KEY, kid=HUB_KEY.key_id)
    with pytest.raises(ForgedSignatureError) as caught:
        verifier().verify(payload)
    assert caught.value.code == "forged_signature"


def test_untrusted_key_is_unknown() -> None:
    with pytest.raises(UnknownKeyError) as caught:
        verifier().verify(sign(key=ROGUE_KEY))
    assert caught.value.code == "unknown_key"


@no_deadline
@given(st.data())
def test_any_tampered_body_character_is_refused(data: st.DataObject) -> None:
    token = token_of(sign())
    header_length = len("v4.public.")
    body_end = token.rindex(".")
    position = data.draw(st.integers(min_value=header_length, max_value=body_end - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != token[position]))
    tampered = token[:position] + replacement + token[position + 1 :]
    expected = (
        ForgedSignatureError
        if position < body_end - 1
        else (ForgedSignatureError, MalformedTokenError)
    )
    with pytest.raises(expected):
        verifier().verify_token(tampered)


def test_tampered_claims_are_forged() -> None:
    token = token_of(sign(Action.LOCK))
    header, body, footer = token.rsplit(".", 2)
    raw = base64url.decode(body)
    altered = raw.replace(b'"lock"', b'"honk"')
    assert altered != raw
    with pytest.raises(ForgedSignatureError):
        verifier().verify_token(f"{header}.{base64url.encode(altered)}.{footer}")


def test_expired_command() -> None:
    payload = sign(ttl_s=30)
    assert verifier(now=NOW + 29).verify(payload)
    for later in (NOW + 30, NOW + 31, NOW + 10_000):
        with pytest.raises(CommandExpiredError) as caught:
            verifier(now=later).verify(payload)
        assert caught.value.code == "expired"


def test_refusals_after_a_valid_signature_carry_the_cmd_id_to_ack() -> None:
    signed = CommandSigner(HUB_KEY, clock=FakeClock()).sign(VEHICLE, Action.LOCK, ttl_s=30)
    with pytest.raises(CommandExpiredError) as expired:
        verifier(now=NOW + 60).verify(signed.payload)
    with pytest.raises(WrongVehicleError) as wrong:
        verifier(vehicle_id="car-43").verify(signed.payload)
    with pytest.raises(CommandNotYetValidError) as early:
        verifier(now=NOW - 600).verify(signed.payload)
    assert expired.value.cmd_id == wrong.value.cmd_id == early.value.cmd_id == signed.cmd_id
    with pytest.raises(ForgedSignatureError) as forged:
        verifier().verify(hand_made(claims_dict(), key=ROGUE_KEY, kid=HUB_KEY.key_id))
    assert forged.value.cmd_id is None


def test_command_issued_in_the_future_is_not_yet_valid() -> None:
    payload = sign()
    assert verifier(now=NOW - DEFAULT_CLOCK_SKEW_S).verify(payload)
    with pytest.raises(CommandNotYetValidError):
        verifier(now=NOW - DEFAULT_CLOCK_SKEW_S - 1).verify(payload)


@no_deadline
@given(vehicle_ids.filter(lambda vehicle_id: vehicle_id != VEHICLE))
def test_command_for_another_vehicle(vehicle_id: str) -> None:
    with pytest.raises(WrongVehicleError) as caught:
        verifier(vehicle_id=vehicle_id).verify(sign())
    assert caught.value.code == "wrong_vehicle"


def test_missing_exp_is_refused() -> None:
    # The reference library would accept this token: it checks exp only when present.
    payload = hand_made(claims_dict(exp=None))
    with pytest.raises(MissingFieldError) as caught:
        verifier(now=1_750_000_010).verify(payload)
    assert caught.value.field == "exp"


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"action": "self_destruct"}, InvalidValueError, "action"),
        ({"cmd_id": "42"}, InvalidValueError, "cmd_id"),
        ({"vid": "car/1"}, InvalidValueError, "vid"),
        ({"iat": 1_750_000_000}, InvalidValueError, "iat"),
        ({"iat": "2025-06-15T15:06:40"}, InvalidValueError, "iat"),
        ({"exp": "2025-06-15T15:06:40+00:00"}, InvalidValueError, "exp"),
        ({"exp": "2025-06-15T17:06:40+00:00"}, OutOfRangeError, "exp"),
        ({"action": None}, MissingFieldError, "action"),
        ({"v": 2}, UnsupportedVersionError, "v"),
    ],
)
def test_bad_claims_are_refused_with_the_field(
    changes: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as caught:
        verifier(now=1_750_000_010).verify(hand_made(claims_dict(**changes)))
    assert getattr(caught.value, "field", None) == field


def test_hand_made_token_with_good_claims_verifies() -> None:
    claims = verifier(now=1_750_000_010).verify(hand_made(claims_dict(extra_claim="kept")))
    assert claims.extras == {"extra_claim": "kept"}


def _token_with_footer(footer: bytes | None) -> str:
    token = pyseto.encode(HUB_KEY.as_pyseto(), json.dumps(claims_dict()).encode(), footer or b"")
    return token.decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v4.public.",
        "v4.local.AAAA.AAAA",
        "v2.public.AAAA.AAAA",
        "v4.public.AAAA",
        "v4.public.AAAA.AAAA.AAAA",
        "v4.public.AA==.AAAA",
        "v4.public." + "A" * 5000 + ".AAAA",
        _token_with_footer(None),
        _token_with_footer(b"not json"),
        _token_with_footer(b'{"key": "k4.pid.x"}'),
        _token_with_footer(b'{"kid": 7}'),
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(MalformedTokenError) as caught:
        verifier().verify_token(token)
    assert caught.value.code == "malformed_token"


def test_short_body_under_a_trusted_kid_is_malformed() -> None:
    footer = base64url.encode(json.dumps({"kid": HUB_KEY.key_id}).encode())
    with pytest.raises(MalformedTokenError):
        verifier().verify_token(f"v4.public.{base64url.encode(b'x' * 64)}.{footer}")


@pytest.mark.parametrize(
    ("payload", "error"),
    [(b"{", BadJsonError), (b"{}", MissingFieldError), (b'{"token": 5}', InvalidValueError)],
)
def test_bad_command_envelope(payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        verifier().verify(payload)


def test_every_verification_failure_is_a_command_verification_error() -> None:
    for error in (
        ForgedSignatureError,
        UnknownKeyError,
        WrongVehicleError,
        CommandExpiredError,
        CommandNotYetValidError,
        MalformedTokenError,
    ):
        assert issubclass(error, CommandVerificationError)


def test_signer_refuses_bad_arguments() -> None:
    signer = CommandSigner(HUB_KEY, clock=FakeClock())
    with pytest.raises(InvalidValueError):
        signer.sign("car/1", Action.LOCK, ttl_s=30)
    for ttl_s in (0, -1, MAX_COMMAND_TTL_S + 1):
        with pytest.raises(ValueError, match="ttl_s"):
            signer.sign(VEHICLE, Action.LOCK, ttl_s=ttl_s)


def test_verifier_refuses_bad_configuration() -> None:
    with pytest.raises(ValueError, match="trusted key"):
        CommandVerifier([], VEHICLE)
    with pytest.raises(InvalidValueError):
        CommandVerifier([HUB_KEY.verifying_key], "car/1")


def test_immobilize_is_refused_while_moving() -> None:
    assert {Action.IMMOBILIZE} == ACTIONS_REFUSED_WHILE_MOVING
    assert {action.value for action in Action} == {
        "lock",
        "unlock",
        "locate",
        "honk",
        "immobilize",
        "mobilize",
    }


def test_claims_model_is_public() -> None:
    claims = verifier().verify(sign(Action.HONK))
    assert isinstance(claims, CommandClaims)
    assert claims.action is Action.HONK
