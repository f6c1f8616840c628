"""Access tokens: PASETO v4.local, claims sub/role/sid/iat/exp/jti/aud/iss, key id in the footer.

pyseto is given only the key the footer names (it would otherwise try every key), and it
checks no claim unless handed a deserializer, and `exp` only when present: every claim is
checked here, against this codec's clock, and a token without `exp` is refused.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import pyseto
from pydantic import AwareDatetime, BaseModel, ConfigDict, TypeAdapter, ValidationError

from api.errors import InvalidTokenError, TokenExpiredError
from api.identity import Role  # noqa: TC001 - pydantic reads the annotation at runtime
from protocol import base64url

if TYPE_CHECKING:
    from api.auth.keys import TokenKey

Clock = Callable[[], float]
"""Returns the current Unix time in seconds, like `time.time` (the default)."""

TOKEN_HEADER: Final = "v4.local."  # noqa: S105 - the PASETO header, not a secret
# Our access tokens are about 400 characters; anything much longer is not ours and is
# refused before any decoding work.
MAX_TOKEN_LENGTH: Final = 2_048
# Servers' clocks drift by milliseconds under NTP; a token "issued" more than this far in
# the future comes from a broken clock or a forged key.
DEFAULT_CLOCK_SKEW_S: Final = 30.0


class AccessClaims(BaseModel):
    """What an access token says. Every field is required; unknown claims are ignored."""

    model_config = ConfigDict(frozen=True)

    sub: uuid.UUID
    role: Role
    sid: uuid.UUID
    iat: AwareDatetime
    exp: AwareDatetime
    jti: uuid.UUID
    aud: str
    iss: str


class TokenFooter(BaseModel):
    """The token's footer: which key made it (PASERK `k4.lid` id)."""

    kid: str


_CLAIMS: Final = TypeAdapter(AccessClaims)
_FOOTER: Final = TypeAdapter(TokenFooter)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly issued access token and its claims."""

    token: str
    claims: AccessClaims

    @property
    def expires_in(self) -> int:
        """Seconds the token is valid for, from its issue time."""
        return int((self.claims.exp - self.claims.iat).total_seconds())


class TokenCodec:
    """Issues and verifies access tokens with a key ring (first key signs, all verify)."""

    def __init__(  # noqa: PLR0913 - keyword-only tuning, each with a default
        self,
        keys: Sequence[TokenKey],
        *,
        audience: str,
        issuer: str,
        ttl_s: int,
        clock: Clock = time.time,
        max_clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
    ) -> None:
        if not keys:
            raise ValueError("a token codec needs at least one key")
        self._signing = keys[0]
        self._keys = {key.key_id: key for key in keys}
        self._footer = _FOOTER.dump_json(TokenFooter(kid=self._signing.key_id))
        self.audience = audience
        self.issuer = issuer
        self.ttl_s = ttl_s
        self._clock = clock
        self._max_clock_skew_s = max_clock_skew_s

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of the keys this codec accepts."""
        return frozenset(self._keys)

    def issue(self, *, user_id: uuid.UUID, role: Role, session_id: uuid.UUID) -> IssuedToken:
        """A new access token for one session, valid for the codec's TTL."""
        # Whole seconds: the claims are RFC 3339 date-times and need no more precision.
        issued_at = datetime.fromtimestamp(math.floor(self._clock()), tz=UTC)
        claims = AccessClaims(
            sub=user_id,
            role=role,
            sid=session_id,
            iat=issued_at,
            exp=issued_at + timedelta(seconds=self.ttl_s),
            jti=uuid.uuid4(),
            aud=self.audience,
            iss=self.issuer,
        )
        token = pyseto.encode(self._signing.key, _CLAIMS.dump_json(claims), self._footer)
        return IssuedToken(token=token.decode("ascii"), claims=claims)

    def verify(self, token: str) -> AccessClaims:
        """The token's claims, or InvalidTokenError / TokenExpiredError."""
        key = self._keys.get(_read_key_id(token))
        if key is None:
            raise InvalidTokenError("token made with a key this API does not hold")
        try:
            decoded = pyseto.decode(key.key, token)
        except (pyseto.PysetoError, ValueError) as exc:
            raise InvalidTokenError("token does not decrypt under its key") from exc
        body = decoded.payload
        if not isinstance(body, bytes):  # only with a deserializer, which is not passed
            raise InvalidTokenError("token payload is not bytes")
        try:
            claims = _CLAIMS.validate_json(body)
        except ValidationError as exc:
            missing = sorted(
                ".".join(str(p) for p in e["loc"]) for e in exc.errors() if e["type"] == "missing"
            )
            detail = f"missing claims {missing}" if missing else "malformed claims"
            raise InvalidTokenError(f"token has {detail}") from exc
        self._check(claims)
        return claims

    def _check(self, claims: AccessClaims) -> None:
        if claims.aud != self.audience:
            raise InvalidTokenError("token is for another audience")
        if claims.iss != self.issuer:
            raise InvalidTokenError("token is from another issuer")
        now = self._clock()
        if claims.iat.timestamp() > now + self._max_clock_skew_s:
            raise InvalidTokenError("token issued in the future")
        if now >= claims.exp.timestamp():
            raise TokenExpiredError


def _read_key_id(token: str) -> str:
    """Check the token's shape and return its footer's key id, before any crypto."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError(f"token longer than {MAX_TOKEN_LENGTH} characters")
    if not token.startswith(TOKEN_HEADER):
        raise InvalidTokenError("not a v4.local PASETO token")
    parts = token.split(".")
    if len(parts) != 4:
        raise InvalidTokenError("token must have a footer naming its key")
    try:
        footer = base64url.decode(parts[3])
        return _FOOTER.validate_json(footer).kid
    except (ValueError, ValidationError) as exc:
        raise InvalidTokenError('token footer is not {"kid": "..."}') from exc
