"""Webhook signatures: how the worker signs a delivery and how a receiver checks it.

    X-FreeCar-Timestamp: 1767225600
    X-FreeCar-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

A receiver recomputes the HMAC over the timestamp, a dot and the body exactly as received
(before any JSON parsing), compares in constant time, and refuses a timestamp more than
`DEFAULT_TOLERANCE_S` away from its own clock, so a captured request cannot be replayed
later. `verify` is that check, for receivers written in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

TIMESTAMP_HEADER: Final = "X-FreeCar-Timestamp"
SIGNATURE_HEADER: Final = "X-FreeCar-Signature"
EVENT_ID_HEADER: Final = "X-FreeCar-Event-Id"
VERSION: Final = "v1"
# Five minutes: more than any clock drift between NTP-synchronised hosts plus a slow
# delivery, short enough that a captured request is useless soon after.
DEFAULT_TOLERANCE_S: Final = 300


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-FreeCar-Signature` value for this timestamp and body."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"{VERSION}={digest.hexdigest()}"


def sign(secret: bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The timestamp and signature headers for a body sent now."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(  # noqa: PLR0913 - what was received, plus the two knobs
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether a received delivery is genuine and fresh (the receiver's side)."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    # Several signatures may be sent during a secret rotation: any one may match.
    return any(
        hmac.compare_digest(expected, candidate.strip())
        for candidate in signature_header.split(",")
    )
