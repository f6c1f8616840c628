"""Unpadded base64url, decoded strictly, as PASETO and PASERK use it."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

_ALPHABET: Final = re.compile(r"[A-Za-z0-9_-]*")


def encode(data: bytes) -> str:
    """Encode bytes as base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes:
    """Decode unpadded base64url, raising ValueError on anything but the canonical encoding.

    Python's decoder skips foreign characters and ignores the unused low bits of the last
    character, so several strings would decode to the same bytes; a token must have one form.
    """
    if _ALPHABET.fullmatch(text) is None or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not unpadded base64url") from exc
    if encode(data) != text:
        raise ValueError("not canonical base64url")
    return data
