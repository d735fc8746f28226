"""Frame images for the dashboard: inline bytes of old rows, else the blob store by URI.

The store is the one the workers write (``AGPT_BLOB_STORE`` plus the ``AGPT_S3_*``
settings, default ``var/blobs``); the page reads only URIs inside it (the store's jail).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ingest.blobstore import (
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    BlobUnavailableError,
    open_blob_store,
)

DEFAULT_BLOB_STORE = "var/blobs"
MAX_IMAGE_BYTES = 64 * 1024 * 1024


def blob_store_from_env(environ: Mapping[str, str] | None = None) -> BlobStore:
    """The blob store named by ``AGPT_BLOB_STORE`` / ``AGPT_S3_*`` (as the workers read them).

    Raises:
        BlobStoreError: an unsupported location.
    """
    env = os.environ if environ is None else environ
    return open_blob_store(
        env.get("AGPT_BLOB_STORE") or DEFAULT_BLOB_STORE,
        endpoint_url=env.get("AGPT_S3_ENDPOINT_URL"), region=env.get("AGPT_S3_REGION"),
        access_key_id=env.get("AGPT_S3_ACCESS_KEY_ID"),
        secret_access_key=env.get("AGPT_S3_SECRET_ACCESS_KEY"),
    )


def load_frame_image(*, store: BlobStore | None, inline: bytes | None, uri: str | None,
                     max_bytes: int = MAX_IMAGE_BYTES) -> tuple[bytes | None, str]:
    """The frame's image bytes, or None and a sentence saying why there are none.

    Args:
        store: The blob store (None: only inline images can be shown).
        inline: Bytes kept in the database (rows from before the blob store).
        uri: The blob-store URI of the image.
        max_bytes: Largest image the page loads.

    Returns:
        ``(bytes, "")`` or ``(None, reason)``.
    """
    if inline is not None:
        return inline, ""
    if uri is None:
        return None, "This frame's image was not kept (storage policy or retention)."
    if store is None:
        return None, f"The image is at {uri}, but no blob store is configured."
    try:
        return store.read(uri, max_bytes=max_bytes), ""
    except BlobNotFoundError:
        return None, "The image has been deleted from the blob store (retention)."
    except BlobUnavailableError as exc:
        return None, f"The blob store is unreachable right now: {exc}"
    except BlobStoreError as exc:
        return None, f"The image cannot be read: {exc}"
