"""`FREECAR_FILES_*`: which file store to use and how to reach it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path  # noqa: TC003 - pydantic reads the annotation at runtime

from pydantic import SecretStr  # noqa: TC002 - pydantic reads the annotation at runtime

from core.settings import Settings


class FilesBackend(StrEnum):
    """Where files are stored."""

    LOCAL = "local"
    """A private directory on this machine; signed URLs are served by the API."""
    S3 = "s3"
    """Any S3-compatible object store; signed URLs are the store's presigned URLs."""


class FileStoreSettings(Settings):
    """The file store's settings (prefix `FREECAR_FILES_`)."""

    files_backend: FilesBackend = FilesBackend.LOCAL
    """FREECAR_FILES_BACKEND: `local` or `s3`."""
    files_dir: Path | None = None
    """FREECAR_FILES_DIR: the local store's directory (created private, mode 0700).

    Unset outside production: a temporary directory per process (files die with it).
    Production refuses to open the local store without it.
    """
    files_secret: SecretStr | None = None
    """FREECAR_FILES_SECRET: the HMAC key of the local store's signed URLs.

    Unset outside production: a random key per process (URLs die with it). A placeholder is
    refused in production at start-up; an unset one when the local store is first opened.
    """
    files_s3_bucket: str = "freecar"
    """FREECAR_FILES_S3_BUCKET: the bucket (created if missing)."""
    files_s3_endpoint_url: str | None = None
    """FREECAR_FILES_S3_ENDPOINT_URL: MinIO, Ceph, R2...; empty means AWS."""
    files_s3_region: str = "us-east-1"
    """FREECAR_FILES_S3_REGION: the region presigned URLs are signed for."""
    files_s3_access_key_id: str | None = None
    """FREECAR_FILES_S3_ACCESS_KEY_ID: empty means boto3's own chain (IAM role, env)."""
    files_s3_secret_access_key: SecretStr | None = None
    """FREECAR_FILES_S3_SECRET_ACCESS_KEY: goes with the access key id."""
    files_s3_prefix: str = ""
    """FREECAR_FILES_S3_PREFIX: prepended to every key, to share a bucket."""
