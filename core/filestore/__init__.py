"""Private file storage with expiring signed URLs: a local directory or any S3-compatible store.

    store = open_filestore(settings, base_url="https://api.example.com")
    store.put("vehicles/car-1/images/abc/original.jpg", data, content_type="image/jpeg")
    store.signed_url("vehicles/car-1/images/abc/original.jpg", expires_in=900)

Keys are relative paths of `A-Za-z0-9._-` segments separated by `/`; nothing is public.
"""

from core.filestore.base import (
    FileNotFoundInStoreError,
    FileStore,
    FileStoreConfigError,
    FileStoreError,
    InvalidKeyError,
    StoredFile,
    check_key,
)
from core.filestore.factory import open_filestore
from core.filestore.local import LocalFileStore, SignatureError
from core.filestore.settings import FilesBackend, FileStoreSettings

__all__ = [
    "FileNotFoundInStoreError",
    "FileStore",
    "FileStoreConfigError",
    "FileStoreError",
    "FileStoreSettings",
    "FilesBackend",
    "InvalidKeyError",
    "LocalFileStore",
    "SignatureError",
    "StoredFile",
    "check_key",
    "open_filestore",
]
