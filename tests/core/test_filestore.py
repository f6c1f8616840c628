"""The file store: a real directory, and a real S3-compatible HTTP server (moto's)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import httpx
import pytest
from moto.server import ThreadedMotoServer
from pydantic import ValidationError

from core.filestore import (
    FileNotFoundInStoreError,
    FileStoreConfigError,
    FileStoreSettings,
    InvalidKeyError,
    LocalFileStore,
    SignatureError,
    open_filestore,
)
from core.filestore.s3 import S3FileStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from core.filestore import FileStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _roundtrip(store: FileStore) -> None:
    key = f"vehicles/car-1/images/{secrets.token_hex(4)}/original.jpg"
    assert not store.exists(key)
    store.put(key, b"\xff\xd8jpeg bytes", content_type="image/jpeg")
    assert store.exists(key)
    stored = store.get(key)
    assert (stored.data, stored.content_type) == (b"\xff\xd8jpeg bytes", "image/jpeg")
    store.put(key, b"replaced", content_type="image/png")
    assert store.get(key).data == b"replaced"
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    assert not store.exists(key)
    with pytest.raises(FileNotFoundInStoreError):
        store.get(key)


def test_local_store_roundtrip_and_privacy(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path / "files", secrets.token_bytes(32))
    _roundtrip(store)
    store.put("a/b.txt", b"x", content_type="text/plain")
    assert (tmp_path / "files").stat().st_mode & 0o077 == 0
    assert (tmp_path / "files" / "a" / "b.txt").stat().st_mode & 0o077 == 0
    for bad in ("../etc/passwd", "/abs", "a//b", "a/../b", "a/./b", "", "a b", "a/.hidden/../x"):
        with pytest.raises(InvalidKeyError):
            store.put(bad, b"x", content_type="text/plain")


def test_local_signed_urls_expire_and_refuse_tampering(tmp_path: Path) -> None:
    clock = Clock()
    store = LocalFileStore(tmp_path, b"k" * 32, base_url="https://api.example/", clock=clock)
    url = httpx.URL(store.signed_url("x/y.jpg", expires_in=60))
    assert url.path == "/v1/files/x/y.jpg"
    assert str(url).startswith("https://api.example/v1/files/")
    exp, sig = int(url.params["exp"]), url.params["sig"]
    assert exp == int(clock.now) + 60
    store.verify("x/y.jpg", exp, sig)
    with pytest.raises(SignatureError) as tampered:
        store.verify("x/z.jpg", exp, sig)  # another file
    assert not tampered.value.expired
    with pytest.raises(SignatureError):
        store.verify("x/y.jpg", exp + 3600, sig)  # a longer life
    other = LocalFileStore(tmp_path, b"o" * 32, clock=clock)
    with pytest.raises(SignatureError):
        other.verify("x/y.jpg", exp, sig)  # another deployment's key
    clock.now += 60
    with pytest.raises(SignatureError) as expired:
        store.verify("x/y.jpg", exp, sig)
    assert expired.value.expired


def test_settings_choose_the_store_and_production_needs_a_secret(tmp_path: Path) -> None:
    store = open_filestore(FileStoreSettings(files_dir=tmp_path, files_secret="s" * 32))
    assert isinstance(store, LocalFileStore)
    with pytest.raises(ValidationError, match="FREECAR_FILES_SECRET holds a placeholder"):
        FileStoreSettings(env="production", files_dir=tmp_path, files_secret="changeme")
    with pytest.raises(FileStoreConfigError, match="FREECAR_FILES_DIR"):
        open_filestore(FileStoreSettings(env="production", files_secret="x" * 32))
    with pytest.raises(FileStoreConfigError, match="FREECAR_FILES_SECRET"):
        open_filestore(FileStoreSettings(env="production", files_dir=tmp_path))
    # Outside production both may be left out: a temporary directory and key per process.
    assert isinstance(open_filestore(FileStoreSettings()), LocalFileStore)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 as a real HTTP server on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _s3_settings(endpoint: str, bucket: str) -> FileStoreSettings:
    return FileStoreSettings(
        files_backend="s3",
        files_s3_endpoint_url=endpoint,
        files_s3_bucket=bucket,
        files_s3_access_key_id="testing",
        files_s3_secret_access_key="testing",
        files_s3_prefix="freecar",
    )


def test_s3_store_roundtrip_and_presigned_urls(s3_endpoint: str) -> None:
    store = open_filestore(_s3_settings(s3_endpoint, f"b{secrets.token_hex(4)}"))
    assert isinstance(store, S3FileStore)
    _roundtrip(store)
    store.put("docs/licence.png", b"\x89PNG data", content_type="image/png")
    url = store.signed_url("docs/licence.png", expires_in=300)
    assert "X-Amz-Expires=300" in url
    assert "X-Amz-Signature=" in url
    assert "/freecar/docs/licence.png" in url  # the prefix is applied
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"\x89PNG data"
    assert response.headers["content-type"] == "image/png"
    unsigned = httpx.get(url.split("?", 1)[0])
    assert unsigned.status_code == 403  # private: only the presigned URL reads it
