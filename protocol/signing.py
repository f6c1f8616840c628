"""Sign commands (hub) and verify them (vehicle): PASETO v4.public with the key id in the footer."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import pyseto
from pydantic import TypeAdapter, ValidationError

from protocol import base64url
from protocol.commands import Action, CommandClaims, CommandFooter, CommandMessage
from protocol.decoding import validate_json
from protocol.errors import (
    CommandExpiredError,
    CommandNotYetValidError,
    ForgedSignatureError,
    InvalidValueError,
    MalformedTokenError,
    UnknownKeyError,
    WrongVehicleError,
)
from protocol.schema import MAX_COMMAND_TTL_S
from protocol.topics import is_valid_vehicle_id

if TYPE_CHECKING:
    from protocol.keys import SigningKey, VerifyingKey

Clock = Callable[[], float]
"""Returns the current Unix time in seconds, like `time.time` (the default)."""

# How far a token's `iat` may lie ahead of the vehicle's clock: in-car clocks drift between GPS
# fixes and NTP syncs, yet a token from minutes ahead means a wrong clock or a stored token.
DEFAULT_CLOCK_SKEW_S: Final = 30.0

# A command token is about 400 characters; anything much longer is not ours and is refused
# before any decoding work.
MAX_TOKEN_LENGTH: Final = 4096

_TOKEN_HEADER: Final = "v4.public."  # noqa: S105 - the PASETO header, not a secret
# An Ed25519 signature is 64 bytes; the signed body is the claims followed by it.
_SIGNATURE_LENGTH: Final = 64

_CLAIMS: Final = TypeAdapter(CommandClaims)
_FOOTER: Final = TypeAdapter(CommandFooter)
_MESSAGE: Final = TypeAdapter(CommandMessage)


@dataclass(frozen=True, slots=True)
class SignedCommand:
    """A signed command ready to publish on the vehicle's command topic."""

    cmd_id: uuid.UUID
    payload: bytes
    claims: CommandClaims


class CommandSigner:
    """Signs commands with the hub's key; tokens name the key by its PASERK id."""

    def __init__(self, key: SigningKey, *, clock: Clock = time.time) -> None:
        self._key = key
        self._clock = clock
        self._footer = _FOOTER.dump_json(CommandFooter(kid=key.key_id))

    @property
    def key_id(self) -> str:
        """The id vehicles look up to find the key that verifies this signer's tokens."""
        return self._key.key_id

    def sign(
        self,
        vehicle_id: str,
        action: Action,
        *,
        ttl_s: int,
        cmd_id: uuid.UUID | None = None,
    ) -> SignedCommand:
        """Sign `action` for one vehicle, valid for `ttl_s` seconds from now.

        Pass `cmd_id` to reuse an id the caller already stores (the command's row); a random
        UUID is drawn otherwise.
        """
        if not is_valid_vehicle_id(vehicle_id):
            raise InvalidValueError(f"invalid vehicle id {vehicle_id!r}", field="vid")
        if not 1 <= ttl_s <= MAX_COMMAND_TTL_S:
            raise ValueError(f"ttl_s must be between 1 and {MAX_COMMAND_TTL_S}, got {ttl_s}")
        # Whole seconds: the claims are RFC 3339 date-times and need no more precision.
        issued_at = datetime.fromtimestamp(math.floor(self._clock()), tz=UTC)
        claims = CommandClaims(
            cmd_id=uuid.uuid4() if cmd_id is None else cmd_id,
            vid=vehicle_id,
            action=action,
            iat=issued_at,
            exp=issued_at + timedelta(seconds=ttl_s),
        )
        token = pyseto.encode(self._key.as_pyseto(), _CLAIMS.dump_json(claims), self._footer)
        payload = _MESSAGE.dump_json(CommandMessage(token=token.decode("ascii")))
        return SignedCommand(cmd_id=claims.cmd_id, payload=payload, claims=claims)


def _read_key_id(token: str) -> str:
    """Check the token's shape and return the key id from its footer, before any crypto."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedTokenError(f"token longer than {MAX_TOKEN_LENGTH} characters")
    if not token.startswith(_TOKEN_HEADER):
        raise MalformedTokenError("not a v4.public PASETO token")
    parts = token.split(".")
    if len(parts) != 4:
        raise MalformedTokenError("token must have a footer naming its key (kid)")
    try:
        body = base64url.decode(parts[2])
        footer = base64url.decode(parts[3])
    except ValueError as exc:
        raise MalformedTokenError(f"token is not canonical base64url: {exc}") from exc
    if len(body) <= _SIGNATURE_LENGTH:
        raise MalformedTokenError("token body too short to hold claims and a signature")
    try:
        return _FOOTER.validate_json(footer).kid
    except ValidationError as exc:
        raise MalformedTokenError('token footer is not JSON of the form {"kid": "..."}') from exc


class CommandVerifier:
    """Verifies commands for one vehicle against the hub keys it trusts."""

    def __init__(
        self,
        trusted_keys: Iterable[VerifyingKey],
        vehicle_id: str,
        *,
        clock: Clock = time.time,
        max_clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
    ) -> None:
        # Several keys at once let the hub rotate: vehicles trust old and new key until every
        # hub signs with the new one, then the old key is removed.
        self._keys = {key.key_id: key for key in trusted_keys}
        if not self._keys:
            raise ValueError("a verifier needs at least one trusted key")
        if not is_valid_vehicle_id(vehicle_id):
            raise InvalidValueError(f"invalid vehicle id {vehicle_id!r}", field="vid")
        self._vehicle_id = vehicle_id
        self._clock = clock
        self._max_clock_skew_s = max_clock_skew_s

    @property
    def trusted_key_ids(self) -> frozenset[str]:
        """Ids of the keys this verifier accepts."""
        return frozenset(self._keys)

    def verify(self, payload: bytes) -> CommandClaims:
        """Verify a command message body and return its claims, or raise a ProtocolError.

        Verification failures raise CommandVerificationError subclasses; a body or claims that
        break the schema raise PayloadError subclasses. Either way, do not act on the command.
        """
        message = validate_json(_MESSAGE, payload, what="command")
        return self.verify_token(message.token)

    def verify_token(self, token: str) -> CommandClaims:
        """Verify a bare token string (see `verify`)."""
        key_id = _read_key_id(token)
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownKeyError(f"token signed by untrusted key {key_id[:80]!r}")
        # Only the chosen key is offered: the library would otherwise try every key it is given.
        try:
            verified = pyseto.decode(key.as_pyseto(), token)
        except pyseto.VerifyError as exc:
            raise ForgedSignatureError("signature does not verify under the named key") from exc
        except (pyseto.PysetoError, ValueError) as exc:
            raise MalformedTokenError(f"token could not be verified: {exc}") from exc
        body = verified.payload
        if not isinstance(body, bytes):  # only with a deserializer, which is not passed
            raise MalformedTokenError("token payload was not returned as bytes")
        # The library checks no claim unless given a deserializer, and `exp` only if present:
        # every claim is validated here, against this verifier's own clock.
        claims = validate_json(_CLAIMS, body, what="command claims")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: CommandClaims) -> None:
        if claims.vid != self._vehicle_id:
            raise WrongVehicleError(
                f"command is for vehicle {claims.vid!r}, not {self._vehicle_id!r}",
                field="vid",
                cmd_id=claims.cmd_id,
            )
        now = self._clock()
        if now >= claims.exp.timestamp():
            raise CommandExpiredError(
                f"command expired at {claims.exp.isoformat()}", field="exp", cmd_id=claims.cmd_id
            )
        if claims.iat.timestamp() > now + self._max_clock_skew_s:
            raise CommandNotYetValidError(
                f"command issued at {claims.iat.isoformat()}, ahead of this vehicle's clock",
                field="iat",
                cmd_id=claims.cmd_id,
            )
