"""Build the configured file store."""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.filestore.base import FileStoreConfigError
from core.filestore.local import LocalFileStore
from core.filestore.settings import FilesBackend
from core.settings import Environment

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.filestore.base import FileStore
    from core.filestore.settings import FileStoreSettings

log = logging.getLogger(__name__)


def local_secret(settings: FileStoreSettings) -> bytes:
    """The local store's HMAC key; a random one outside production when none is set."""
    secret = settings.files_secret
    if secret is not None and secret.get_secret_value():
        return secret.get_secret_value().encode()
    if settings.env is Environment.PRODUCTION:
        # Links signed by a per-process key would fail on every other API process.
        raise FileStoreConfigError("production needs FREECAR_FILES_SECRET for the local store")
    log.warning("FREECAR_FILES_SECRET is not set: signed file URLs die with this process")
    return secrets.token_bytes(32)


def open_filestore(
    settings: FileStoreSettings, *, base_url: str = "", clock: Callable[[], float] = time.time
) -> FileStore:
    """The store FREECAR_FILES_BACKEND names; `base_url` prefixes the local store's URLs."""
    if settings.files_backend is FilesBackend.S3:
        from core.filestore.s3 import S3FileStore  # noqa: PLC0415 - boto3 only when chosen

        secret = settings.files_s3_secret_access_key
        return S3FileStore.connect(
            settings.files_s3_bucket,
            endpoint_url=settings.files_s3_endpoint_url or None,
            region=settings.files_s3_region,
            access_key_id=settings.files_s3_access_key_id or None,
            secret_access_key=None if secret is None else secret.get_secret_value(),
            prefix=settings.files_s3_prefix,
        )
    directory = settings.files_dir
    if directory is None:
        if settings.env is Environment.PRODUCTION:
            raise FileStoreConfigError("production needs FREECAR_FILES_DIR for the local store")
        directory = Path(tempfile.mkdtemp(prefix="freecar-files-"))
        log.warning("FREECAR_FILES_DIR is not set: files go to %s for this process", directory)
    return LocalFileStore(directory, local_secret(settings), base_url=base_url, clock=clock)
