"""The file store interface and its errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Protocol

# Segments of letters, digits, dot, dash, underscore; no empty, `.` or `..` segment. Keys
# become paths on disk and in URLs, so nothing that could escape or need quoting.
_KEY: Final = re.compile(
    r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}(?:/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){0,15}"
)
MAX_KEY_LENGTH: Final = 512


class FileStoreError(Exception):
    """Root of the file store's errors."""


class FileStoreConfigError(FileStoreError):
    """The store cannot be opened as configured (the message names the setting)."""


class InvalidKeyError(FileStoreError, ValueError):
    """The key is not a safe relative path."""


class FileNotFoundInStoreError(FileStoreError, KeyError):
    """No file under that key."""


def check_key(key: str) -> str:
    """Return `key` if it is a valid store key, else raise InvalidKeyError."""
    if len(key) > MAX_KEY_LENGTH or _KEY.fullmatch(key) is None:
        raise InvalidKeyError(f"invalid file key {key[:80]!r}")
    return key


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file's bytes and the content type it was stored with."""

    data: bytes
    content_type: str


class FileStore(Protocol):
    """Where private files live; readers get expiring signed URLs, never the store itself."""

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store `data` under `key`, replacing what was there."""
        ...

    def get(self, key: str) -> StoredFile:
        """The file under `key`; FileNotFoundInStoreError if there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the file under `key` (no error if there is none)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether a file is stored under `key`."""
        ...

    def signed_url(self, key: str, expires_in: int) -> str:
        """A URL that serves the file for `expires_in` seconds, then stops working."""
        ...
