"""A file store in a private directory; its signed URLs are HMAC-signed paths the API serves."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode

from core.filestore.base import FileNotFoundInStoreError, FileStoreError, StoredFile, check_key

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# The route that serves signed URLs (api/fleet/files.py); `{key}` is the store key.
FILES_PATH: Final = "/v1/files/"
_META_SUFFIX: Final = ".meta.json"
_DEFAULT_TYPE: Final = "application/octet-stream"


class SignatureError(FileStoreError):
    """A signed URL was tampered with or has expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class LocalFileStore:
    """Files under `root` (mode 0700), each with a small JSON sidecar for its content type."""

    def __init__(
        self,
        root: Path,
        secret: bytes,
        *,
        base_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the signing secret needs at least 16 bytes")
        self.root = root
        self._secret = secret
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for target, payload in (
            (
                path.with_name(path.name + _META_SUFFIX),
                json.dumps({"content_type": content_type}).encode(),
            ),
            (path, data),
        ):
            temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            temporary.write_bytes(payload)
            temporary.chmod(0o600)
            temporary.replace(target)

    def get(self, key: str) -> StoredFile:
        """The file's bytes and content type."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFoundInStoreError(key) from None
        try:
            meta = json.loads(path.with_name(path.name + _META_SUFFIX).read_text())
            content_type = str(meta.get("content_type") or _DEFAULT_TYPE)
        except (OSError, ValueError):
            content_type = _DEFAULT_TYPE
        return StoredFile(data=data, content_type=content_type)

    def delete(self, key: str) -> None:
        """Remove the file and its sidecar."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        path.with_name(path.name + _META_SUFFIX).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        """Whether the file is there."""
        return self._path(key).is_file()

    def now(self) -> float:
        """The store's clock (expiry checks use it)."""
        return self._clock()

    def _signature(self, key: str, expires: int) -> str:
        mac = hmac.new(self._secret, f"{key}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def signed_url(self, key: str, expires_in: int) -> str:
        """`{base}/v1/files/{key}?exp=<unix time>&sig=<HMAC-SHA256 of key and exp>`."""
        check_key(key)
        expires = int(self._clock()) + int(expires_in)
        query = urlencode({"exp": expires, "sig": self._signature(key, expires)})
        return f"{self._base_url}{FILES_PATH}{key}?{query}"

    def verify(self, key: str, expires: int, signature: str) -> None:
        """Raise SignatureError unless `signature` is ours for `key` and `expires` is ahead."""
        check_key(key)
        # compare_digest takes ASCII text only; anything else is not our signature anyway.
        if not signature.isascii() or not hmac.compare_digest(
            self._signature(key, expires), signature
        ):
            raise SignatureError("the link's signature does not match")
        if self._clock() >= expires:
            raise SignatureError("the link has expired", expired=True)
