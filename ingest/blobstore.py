"""Claim check: large images travel outside the Kafka message, the message carries a URI.

A frame whose image is above the limit is stored once in a blob store, content-addressed by
its SHA-256, and the envelope carries ``image_uri`` + ``image_sha256`` instead of the bytes;
the worker fetches the blob and verifies the checksum (``inference.images``), so a blob
changed or corrupted after ingest becomes a ``checksum_mismatch`` dead letter, never a verdict
on the wrong pixels.

:class:`LocalBlobStore` writes a directory that ingest and every worker can read (local
disk on a single host, or an NFS / SMB share mounted at the same path everywhere) and
hands out ``file://`` URIs; :class:`ingest.s3_blobstore.S3BlobStore` is the production store
(``s3://bucket/prefix`` on any S3-compatible service). Both implement :class:`BlobStore`:
``put`` (ingest, the worker keeping a frame's image), ``read`` (the worker, the dashboard)
and ``delete`` (retention). ``read`` serves only URIs inside the store (a jail): a foreign or
escaping URI is refused, never followed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

from ingest.blob_jail import read_in_store, store_relative_parts
from ingest.envelope import FrameEnvelope, FrameError, image_format, sha256_hex

_SUFFIXES = {"png": ".png", "jpeg": ".jpg"}


class BlobStoreError(RuntimeError):
    """A blob could not be stored, or the store location is not usable."""


class BlobUnavailableError(BlobStoreError):
    """The store cannot be reached or refuses service now; retrying later may succeed.

    Workers pause on it (like on a database outage) instead of dead-lettering frames.
    """


class BlobNotFoundError(BlobStoreError):
    """No blob at this URI (never stored, or deleted by retention)."""


class BlobUriError(BlobStoreError):
    """The URI does not name a blob inside this store (other scheme, bucket, or escaping path)."""


class BlobSchemeError(BlobUriError):
    """The URI's scheme is not this store's (e.g. ``s3://`` for a directory store)."""


class BlobTooLargeError(BlobStoreError):
    """The blob is larger than the caller's limit; nothing beyond the limit was read."""


class BlobStore(Protocol):
    """Stores immutable blobs under their SHA-256 and returns a URI the workers can read."""

    def put(self, data: bytes, *, sha256: str | None = None) -> str:
        """Store ``data`` (idempotent for equal content) and return its URI."""
        ...

    def read(self, uri: str, *, max_bytes: int) -> bytes:
        """Return the blob at ``uri`` (a URI this store handed out), at most ``max_bytes``."""
        ...

    def delete(self, uri: str) -> None:
        """Delete the blob at ``uri``; deleting a missing blob is not an error."""
        ...


class LocalBlobStore:
    """Content-addressed files under ``root``: ``<root>/<sha[:2]>/<sha>.<png|jpg>``.

    Writes are atomic (temporary file in the same directory, fsync, rename): a reader sees
    either no file or the whole blob, even if ingest dies mid-write. Equal images are stored
    once. Nothing is ever deleted here; prune by age outside agpt (e.g. ``find ROOT -type f
    -mtime +30 -delete``) once the frames are past review.
    """

    def __init__(self, root: Path, *, read_timeout_s: float = 10.0) -> None:
        """Use (and create on first put) the directory ``root``.

        Args:
            root: The store's directory.
            read_timeout_s: Longest :meth:`read` waits for one blob (a hung share).
        """
        configured = Path(root).absolute()
        self.root = configured.resolve()
        # URIs may spell the root as configured or as resolved (a symlinked mount).
        self._roots = tuple(dict.fromkeys((self.root, configured)))
        self.read_timeout_s = read_timeout_s

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

    def _path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            msg = f"{uri!r} is not a file:// URI of the blob store at {self.root}"
            raise BlobUriError(msg)
        path = Path(url2pathname(parsed.path)).resolve()
        if not path.is_relative_to(self.root):
            msg = f"{uri!r} lies outside the blob store at {self.root}"
            raise BlobUriError(msg)
        return path

    def read(self, uri: str, *, max_bytes: int) -> bytes:
        """Read the regular file ``uri`` names below the root, never anything outside.

        ``uri`` is untrusted (it comes from a message); see :mod:`ingest.blob_jail` for how
        ``..``, percent-encoding, doubled slashes, symlinks, FIFOs and devices are refused.

        Raises:
            BlobSchemeError: not a ``file://`` URI.
            BlobUriError: a path outside the root (``..``, another directory, a host).
            BlobNotFoundError: below the root but not a readable regular file (missing, a
                symlink, a FIFO, a directory). Workers answer both with one reason code.
            BlobTooLargeError: more than ``max_bytes`` (enforced while reading).
            BlobUnavailableError: the store cannot be opened, or the read timed out.
        """
        try:  # lexical checks first: nothing on disk is touched for a URI outside the root
            store_relative_parts(self._roots, uri)
        except FrameError as exc:
            kind = BlobSchemeError if exc.reason == "bad_uri" else BlobUriError
            raise kind(str(exc)) from exc
        try:
            return read_in_store(self._roots, uri, max_bytes=max_bytes,
                                 timeout_s=self.read_timeout_s)
        except FrameError as exc:
            kind = {"bad_uri": BlobSchemeError, "oversized": BlobTooLargeError,
                    "blob_timeout": BlobUnavailableError,
                    "blob_store_unavailable": BlobUnavailableError}.get(exc.reason,
                                                                         BlobNotFoundError)
            raise kind(str(exc)) from exc

    def delete(self, uri: str) -> None:
        """Delete the blob at ``uri`` (missing is fine).

        Raises:
            BlobUriError: the URI is not inside ``root``.
            BlobUnavailableError: the file exists but cannot be removed.
        """
        path = self._path(uri)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            msg = f"cannot delete {uri}: {exc}"
            raise BlobUnavailableError(msg) from exc


def open_blob_store(location: str, *, read_timeout_s: float = 10.0,
                    **s3_options: str | None) -> BlobStore:
    """The blob store at ``location``: a directory, a ``file://`` URI or ``s3://bucket/prefix``.

    Args:
        location: Where blobs live.
        read_timeout_s: Longest a local store's read may take.
        **s3_options: For ``s3://``: ``endpoint_url``, ``region``, ``access_key_id``,
            ``secret_access_key`` (None = boto3's default chain: env, profile, IAM role).

    Raises:
        BlobStoreError: Another scheme.
    """
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        path = url2pathname(parsed.path) if parsed.scheme == "file" else location
        return LocalBlobStore(Path(path), read_timeout_s=read_timeout_s)
    if parsed.scheme == "s3":
        from ingest.s3_blobstore import S3BlobStore  # boto3 only where S3 is configured

        return S3BlobStore.from_location(location, **s3_options)
    msg = (f"blob store {location!r}: scheme {parsed.scheme!r} is not supported "
           "(use a directory, a file:// URI or s3://bucket/prefix)")
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
