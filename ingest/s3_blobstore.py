"""The production blob store: content-addressed objects in an S3-compatible bucket.

``AGPT_BLOB_STORE=s3://bucket/prefix`` selects it; ``AGPT_S3_ENDPOINT_URL`` points at MinIO,
Ceph or another S3 API (empty: AWS), credentials come from ``AGPT_S3_ACCESS_KEY_ID`` /
``AGPT_S3_SECRET_ACCESS_KEY`` or boto3's default chain (``AWS_*`` env, profile, IAM role).
Keys are ``<prefix>/<sha[:2]>/<sha>.<png|jpg>``, so equal images are one object and a put is
idempotent. Timeouts are short and retries few: an unreachable store surfaces within seconds
as :class:`BlobUnavailableError`, which the worker treats like a database outage (pause,
retry the same batch, lose nothing).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from ingest.blobstore import (
    _SUFFIXES,
    BlobNotFoundError,
    BlobStoreError,
    BlobTooLargeError,
    BlobUnavailableError,
    BlobUriError,
)
from ingest.envelope import image_format, sha256_hex

_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3BlobStore:
    """Blobs under ``s3://bucket/prefix`` through a boto3 S3 client."""

    def __init__(self, *, client: Any, bucket: str, prefix: str = "") -> None:
        """Use ``client`` (a boto3 S3 client) for objects under ``bucket``/``prefix``."""
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @classmethod
    def from_location(
        cls,
        location: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_s: float = 5.0,
    ) -> S3BlobStore:
        """Build the store of ``s3://bucket/prefix`` with its own client.

        Raises:
            BlobStoreError: the location names no bucket.
        """
        import boto3
        from botocore.config import Config

        parsed = urlparse(location)
        if parsed.scheme != "s3" or not parsed.netloc:
            msg = f"blob store {location!r}: expected s3://bucket[/prefix]"
            raise BlobStoreError(msg)
        config = Config(
            connect_timeout=timeout_s, read_timeout=timeout_s,
            retries={"total_max_attempts": 2, "mode": "standard"},
            # Path-style works on every S3-compatible server (MinIO, moto, Ceph) and on AWS.
            s3={"addressing_style": "path"},
        )
        client = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or "us-east-1",
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None, config=config,
        )
        return cls(client=client, bucket=parsed.netloc, prefix=parsed.path)

    def key_for(self, sha256: str, data: bytes) -> str:
        """The object key of ``data`` with hex digest ``sha256``."""
        suffix = _SUFFIXES.get(image_format(data) or "", ".bin")
        name = f"{sha256[:2]}/{sha256}{suffix}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri_for(self, key: str) -> str:
        """The ``s3://`` URI of ``key`` in this bucket."""
        return f"s3://{self.bucket}/{key}"

    def put(self, data: bytes, *, sha256: str | None = None) -> str:
        """Store ``data`` and return its ``s3://`` URI (same content, same object).

        Raises:
            BlobUnavailableError: the store cannot be reached or refused the write.
        """
        digest = sha256 or sha256_hex(data)
        key = self.key_for(digest, data)
        self._call("put", key, lambda: self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, Metadata={"sha256": digest}))
        return self.uri_for(key)

    def read(self, uri: str, *, max_bytes: int) -> bytes:
        """Read the object at ``uri``, at most ``max_bytes`` of it.

        Raises:
            BlobUriError: not an ``s3://`` URI of this bucket and prefix.
            BlobNotFoundError: no such object.
            BlobTooLargeError: the object is larger than ``max_bytes``.
            BlobUnavailableError: the store cannot be reached.
        """
        key = self._key(uri)
        response = self._call("read", key, lambda: self.client.get_object(
            Bucket=self.bucket, Key=key))
        body = response["Body"]
        try:
            if int(response.get("ContentLength", 0)) > max_bytes:
                msg = f"blob at {uri} is {response['ContentLength']} bytes, above {max_bytes}"
                raise BlobTooLargeError(msg)
            data = self._call("read", key, lambda: body.read(max_bytes + 1))
        finally:
            body.close()
        if len(data) > max_bytes:
            msg = f"blob at {uri} is larger than {max_bytes} bytes"
            raise BlobTooLargeError(msg)
        return data

    def delete(self, uri: str) -> None:
        """Delete the object at ``uri`` (S3 deletes of missing keys succeed).

        Raises:
            BlobUriError: not a URI of this store.
            BlobUnavailableError: the store cannot be reached.
        """
        key = self._key(uri)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def _key(self, uri: str) -> str:
        parsed = urlparse(uri)
        key = parsed.path.lstrip("/")
        inside = not self.prefix or key.startswith(f"{self.prefix}/")
        segments = key.split("/")
        if (parsed.scheme != "s3" or parsed.netloc != self.bucket or not inside
                or any(part in ("", ".", "..") for part in segments)
                or parsed.query or parsed.fragment):
            prefix = f"/{self.prefix}" if self.prefix else ""
            msg = f"{uri!r} is not an object of the blob store s3://{self.bucket}{prefix}"
            raise BlobUriError(msg)
        return key

    def _call(self, what: str, key: str, call: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _MISSING:
                msg = f"no object s3://{self.bucket}/{key}"
                raise BlobNotFoundError(msg) from exc
            # 5xx, throttling, a missing bucket, denied credentials: the operator must act or
            # wait; the frames must not be dead-lettered meanwhile.
            msg = f"S3 {what} of s3://{self.bucket}/{key} failed: {code} {error.get('Message')}"
            raise BlobUnavailableError(msg) from exc
        except BotoCoreError as exc:  # connection refused/reset, timeouts, DNS
            msg = f"S3 {what} of s3://{self.bucket}/{key} failed: {exc}"
            raise BlobUnavailableError(msg) from exc
