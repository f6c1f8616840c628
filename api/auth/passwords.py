"""Staff passwords: argon2id hashes (PHC strings), verified off the event loop."""

from __future__ import annotations

import functools
import secrets
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from starlette.concurrency import run_in_threadpool

# argon2-cffi's defaults follow RFC 9106's second recommendation (64 MiB, 3 passes):
# about 50 ms on one core here, cheap for a sign-in and ruinous for an offline guesser.
_HASHER: Final = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash of a password nobody knows (made once, on first use).

    Verified when the email is unknown, so "no such user" and "wrong password" take the same
    time.
    """
    return _HASHER.hash(secrets.token_urlsafe(16))


# Shorter is guessable; longer is someone feeding argon2 megabytes.
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 256


def hash_password(password: str) -> str:
    """An argon2id PHC string for `password` (CPU-heavy: call from a thread)."""
    return _HASHER.hash(password)


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return (
            _HASHER.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    return _HASHER.check_needs_rehash(password_hash)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a None hash costs the same and never matches."""
    return await run_in_threadpool(_verify, password_hash, password)


async def hash_password_async(password: str) -> str:
    """`hash_password` in a worker thread, so the event loop keeps serving."""
    return await run_in_threadpool(hash_password, password)
