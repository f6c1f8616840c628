"""A file store on any S3-compatible service (AWS, MinIO, Ceph...) through boto3."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from core.filestore.base import FileNotFoundInStoreError, FileStoreError, StoredFile, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class S3FileStore:
    """Objects in one private bucket; readers get presigned GET URLs."""

    def __init__(self, client: S3Client, bucket: str, *, prefix: str = "") -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    @classmethod
    def connect(  # noqa: PLR0913 - the S3 connection's parts
        cls,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        create_bucket: bool = True,
    ) -> S3FileStore:
        """A store on `bucket`, created if missing (and allowed)."""
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            # Path-style addressing works on every S3-compatible server; virtual hosts need DNS.
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        store = cls(client, bucket, prefix=prefix)
        if create_bucket:
            store.ensure_bucket(region)
        return store

    def ensure_bucket(self, region: str) -> None:
        """Create the bucket if it does not exist."""
        try:
            self._client.head_bucket(Bucket=self._bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in _MISSING:
                raise FileStoreError(f"cannot use bucket {self._bucket}: {exc}") from exc
            if region == "us-east-1":
                self._client.create_bucket(Bucket=self._bucket)
            else:
                self._client.create_bucket(
                    Bucket=self._bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item] # any region name is valid for S3-compatible stores
                )

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Upload the object (private: no ACL is ever granted)."""
        self._client.put_object(
            Bucket=self._bucket, Key=self._key(key), Body=data, ContentType=content_type
        )

    def get(self, key: str) -> StoredFile:
        """Download the object."""
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key(key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                raise FileNotFoundInStoreError(key) from None
            raise
        return StoredFile(
            data=response["Body"].read(),
            content_type=response.get("ContentType") or "application/octet-stream",
        )

    def delete(self, key: str) -> None:
        """Delete the object (S3 answers the same whether it existed or not)."""
        self._client.delete_object(Bucket=self._bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        try:
            self._client.head_object(Bucket=self._bucket, Key=self._key(key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return False
            raise
        return True

    def signed_url(self, key: str, expires_in: int) -> str:
        """A presigned GET URL valid `expires_in` seconds."""
        return self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._key(key)},
            ExpiresIn=int(expires_in),
        )
