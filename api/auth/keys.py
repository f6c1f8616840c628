"""Access-token keys: PASERK `k4.local` strings, named by their PASERK `k4.lid` id.

A key ring is a comma-separated list; the first key signs and every key verifies, which is
how keys rotate without signing anybody out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import pyseto

from protocol import base64url

if TYPE_CHECKING:
    from pyseto import KeyInterface

LOCAL_KEY_PREFIX: Final = "k4.local."
# PASETO v4.local keys are 256-bit (XChaCha20 and BLAKE2b keys derived from them).
KEY_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class TokenKey:
    """One symmetric token key and the id tokens name it by."""

    key_id: str
    key: KeyInterface = field(repr=False)


def parse_token_key(text: str) -> TokenKey:
    """Parse one `k4.local.<base64url>` key, refusing anything but 32 bytes."""
    text = text.strip()
    if not text.startswith(LOCAL_KEY_PREFIX):
        raise ValueError("a token key must be a PASERK k4.local key (k4.local.<base64url>)")
    try:
        raw = base64url.decode(text.removeprefix(LOCAL_KEY_PREFIX))
    except ValueError as exc:
        raise ValueError("a token key's body must be canonical base64url") from exc
    # pyseto accepts a PASERK of any length; a short key is a typo, not a key.
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a token key must hold {KEY_BYTES} bytes, this one holds {len(raw)}")
    key = pyseto.Key.new(version=4, purpose="local", key=raw)
    return TokenKey(key_id=key.to_paserk_id(), key=key)


def parse_token_keys(text: str) -> list[TokenKey]:
    """Parse a comma-separated key ring; the first key is the signing key."""
    keys = [parse_token_key(part) for part in text.split(",") if part.strip()]
    if not keys:
        raise ValueError("no token key given")
    if len({k.key_id for k in keys}) != len(keys):
        raise ValueError("the same token key is listed twice")
    return keys


def generate_token_key() -> str:
    """A new random key as a PASERK string, for FREECAR_API_TOKEN_KEYS."""
    return LOCAL_KEY_PREFIX + base64url.encode(secrets.token_bytes(KEY_BYTES))
