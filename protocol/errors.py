"""The exceptions of the MQTT contract, each with a stable machine-readable code.

The hub writes `code` into dead-letter records and the agent writes it into the `reason` of a
rejected command's ack, so a code never changes once published; new failure kinds get new codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from uuid import UUID


class ProtocolError(Exception):
    """Root of every error raised by the protocol package."""

    code: ClassVar[str] = "protocol_error"

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Dotted path of the offending field ("lat", "extras.x.0"); None when the whole
        # message is at fault (bad JSON, bad signature).
        self.field = field
        # Position of the failing element when a JSON array of fixes was decoded.
        self.index = index

    def as_dict(self) -> dict[str, str | int | None]:
        """Describe the error as plain JSON-ready data, for dead-letter records and logs."""
        return {
            "code": self.code,
            "field": self.field,
            "index": self.index,
            "message": self.message,
        }


class TopicError(ProtocolError):
    """A topic string or a vehicle id does not fit the topic layout of the contract."""

    code = "bad_topic"


class KeyFormatError(ProtocolError):
    """A signing or verifying key could not be read (wrong format, wrong algorithm, corrupt)."""

    code = "bad_key"


# --- Payloads: what a decoder refuses --------------------------------------------------------


class PayloadError(ProtocolError):
    """A message body does not follow the contract; the hub dead-letters it."""

    code = "bad_payload"


class BadJsonError(PayloadError):
    """The message body is not valid UTF-8 JSON."""

    code = "bad_json"


class MissingFieldError(PayloadError):
    """A required field is absent."""

    code = "missing_field"


class OutOfRangeError(PayloadError):
    """A number, string or array lies outside its allowed range or length."""

    code = "out_of_range"


class InvalidValueError(PayloadError):
    """A field has the wrong JSON type or a value the contract does not allow."""

    code = "invalid_value"


class UnsupportedVersionError(PayloadError):
    """The message declares a protocol version this implementation does not speak."""

    code = "unsupported_version"


# --- Commands: why a vehicle refuses to act ------------------------------------------------


class CommandVerificationError(ProtocolError):
    """A command token failed verification; the vehicle must not act on it."""

    code = "command_refused"

    def __init__(
        self, message: str, *, field: str | None = None, cmd_id: UUID | None = None
    ) -> None:
        super().__init__(message, field=field)
        # Set only when the signature verified, so the id is trustworthy enough to ack
        # (wrong vehicle, expired, not yet valid); None when nothing in the token can be trusted.
        self.cmd_id = cmd_id


class MalformedTokenError(CommandVerificationError):
    """The token is not a well-formed PASETO v4.public token with a `kid` footer."""

    code = "malformed_token"


class UnknownKeyError(CommandVerificationError):
    """The token names a key id the vehicle does not trust."""

    code = "unknown_key"


class ForgedSignatureError(CommandVerificationError):
    """The signature does not match the token's contents under the named key."""

    code = "forged_signature"


class WrongVehicleError(CommandVerificationError):
    """The token was issued for another vehicle."""

    code = "wrong_vehicle"


class CommandExpiredError(CommandVerificationError):
    """The token's `exp` has passed."""

    code = "expired"


class CommandNotYetValidError(CommandVerificationError):
    """The token's `iat` lies further in the future than the allowed clock skew."""

    code = "not_yet_valid"
