"""Claim check: large images travel outside the Kafka message, the message carries a URI.

A frame whose image is above the limit is stored once in a blob store, content-addressed by
its SHA-256, and the envelope carries ``image_uri`` + ``image_sha256`` instead of the bytes;
the worker fetches the blob and verifies the checksum (``inference.images``), so a blob
changed or corrupted after ingest becomes a ``checksum_mismatch`` dead letter, never a verdict
on the wrong pixels.

:class:`LocalBlobStore` writes a directory that ingest and every worker can read (local
disk on a single host, or an NFS / SMB share mounted at the same path everywhere) and
hands out ``file://`` URIs. An object store (``s3://bucket/prefix``) fits the same
:class:`BlobStore` protocol but is not implemented in this build: the workers' reader accepts
``file://`` only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

from ingest.envelope import FrameEnvelope, image_format, sha256_hex

_SUFFIXES = {"png": ".png", "jpeg": ".jpg"}


class BlobStoreError(RuntimeError):
    """A blob could not be stored, or the store location is not usable."""


class BlobStore(Protocol):
    """Stores immutable blobs under their SHA-256 and returns a URI the workers can read."""

    def put(self, data: bytes, *, sha256: str | None = None) -> str:
        """Store ``data`` (idempotent for equal content) and return its URI."""
        ...


class LocalBlobStore:
    """Content-addressed files under ``root``: ``<root>/<sha[:2]>/<sha>.<png|jpg>``.

    Writes are atomic (temporary file in the same directory, fsync, rename): a reader sees
    either no file or the whole blob, even if ingest dies mid-write. Equal images are stored
    once. Nothing is ever deleted here; prune by age outside agpt (e.g. ``find ROOT -type f
    -mtime +30 -delete``) once the frames are past review.
    """

    def __init__(self, root: Path) -> None:
        """Use (and create on first put) the directory ``root``."""
        self.root = Path(root).resolve()

    def path_for(self, sha256: str, data: bytes) -> Path:
        """Where the blob of ``data`` with hex digest ``sha256`` lives."""
        suffix = _SUFFIXES.get(image_format(data) or "", ".bin")
        return self.root / sha256[:2] / f"{sha256}{suffix}"

    def put(self, data: bytes, *, sha256: str | None = None) -> str:
        """Store ``data`` and return its ``file://`` URI.

        Args:
            data: The encoded image.
            sha256: Its hex digest when already known (saves hashing twice).

        Raises:
            BlobStoreError: The directory is not writable or the disk is full.
        """
        digest = sha256 or sha256_hex(data)
        target = self.path_for(digest, data)
        if target.is_file() and target.stat().st_size == len(data):
            return target.as_uri()  # content-addressed: same name, same bytes
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as sink:
                    sink.write(data)
                    sink.flush()
                    os.fsync(sink.fileno())
                os.replace(temp, target)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            msg = f"cannot store a {len(data)}-byte blob under {self.root}: {exc}"
            raise BlobStoreError(msg) from exc
        return target.as_uri()


def open_blob_store(location: str) -> BlobStore:
    """The blob store at ``location``: a directory path or a ``file://`` URI.

    Raises:
        BlobStoreError: Another scheme (``s3://`` needs a BlobStore implementation first).
    """
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        path = url2pathname(parsed.path) if parsed.scheme == "file" else location
        return LocalBlobStore(Path(path))
    msg = (f"blob store {location!r}: scheme {parsed.scheme!r} is not supported in this build "
           "(use a directory or file:// URI shared with the workers)")
    raise BlobStoreError(msg)


def claim_check(frame: FrameEnvelope, store: BlobStore, *, limit_bytes: int) -> FrameEnvelope:
    """Move the image of ``frame`` into ``store`` when it is larger than ``limit_bytes``.

    Returns:
        ``frame`` itself when it is small enough (or already a claim check), else a copy
        with ``image=None``, ``image_uri`` = the blob's URI and ``image_sha256`` set.
    """
    if frame.image is None or len(frame.image) <= limit_bytes:
        return frame
    digest = sha256_hex(frame.image)
    uri = store.put(frame.image, sha256=digest)
    return replace(frame, image=None, image_uri=uri, image_sha256=digest)
