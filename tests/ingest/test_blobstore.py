"""The claim check end to end: ingest's blob store → wire → the worker's reader."""

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pytest

from inference.images import ImageLimits, frame_image_bytes
from ingest.blobstore import (
    BlobNotFoundError,
    BlobStoreError,
    BlobTooLargeError,
    BlobUriError,
    LocalBlobStore,
    claim_check,
    open_blob_store,
)
from ingest.envelope import FrameEnvelope, FrameError, decode, sha256_hex
from tests.ingest.sample_images import noisy_png, png_bytes

LIMITS = ImageLimits()


def frame_with(image: bytes) -> FrameEnvelope:
    return FrameEnvelope(camera_id="cam-1", frame_id="f-1", product="textile",
                         captured_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC), image=image)


def test_put_writes_one_content_addressed_file(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    data = png_bytes(7)

    uri = store.put(data)
    again = store.put(data)

    digest = sha256_hex(data)
    path = Path(urlparse(uri).path)
    assert uri == again
    assert uri.startswith("file:///")
    assert path == tmp_path / "blobs" / digest[:2] / f"{digest}.png"
    assert path.read_bytes() == data
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == [path]


def test_a_big_image_travels_as_uri_and_comes_back_identical(tmp_path):
    big = noisy_png(160)  # ~77 kB
    store = LocalBlobStore(tmp_path)
    sent = claim_check(frame_with(big), store, limit_bytes=10_000)

    received = decode(sent.encode())

    assert received.image is None
    assert received.image_sha256 == sha256_hex(big)
    assert len(sent.encode()) < 1_000  # the message holds the header only
    assert frame_image_bytes(received, LIMITS, store) == big


def test_a_small_image_stays_in_the_message(tmp_path):
    frame = frame_with(png_bytes(9))
    assert claim_check(frame, LocalBlobStore(tmp_path), limit_bytes=10_000) is frame
    assert list(tmp_path.iterdir()) == []


def test_a_blob_root_with_spaces_and_unicode_round_trips(tmp_path):
    big = noisy_png(100)
    store = LocalBlobStore(tmp_path / "line 3 – blobs")
    received = decode(claim_check(frame_with(big), store, limit_bytes=1_000).encode())
    assert "%20" in received.image_uri
    assert frame_image_bytes(received, LIMITS, store) == big


def test_a_tampered_blob_is_a_checksum_mismatch(tmp_path):
    big = noisy_png(100)
    store = LocalBlobStore(tmp_path)
    received = decode(claim_check(frame_with(big), store, limit_bytes=1_000).encode())
    Path(urlparse(received.image_uri).path).write_bytes(noisy_png(100, seed=1))

    with pytest.raises(FrameError) as caught:
        frame_image_bytes(received, LIMITS, store)
    assert caught.value.reason == "checksum_mismatch"


def test_open_blob_store_takes_a_path_file_or_s3_uri_and_refuses_other_schemes(tmp_path):
    assert open_blob_store(str(tmp_path)).root == tmp_path.resolve()
    assert open_blob_store((tmp_path / "a b").as_uri()).root == (tmp_path / "a b").resolve()
    s3 = open_blob_store("s3://bucket/frames", endpoint_url="http://127.0.0.1:9")
    assert (s3.bucket, s3.prefix) == ("bucket", "frames")
    with pytest.raises(BlobStoreError, match="ftp"):
        open_blob_store("ftp://host/frames")


def test_local_store_reads_deletes_and_stays_in_its_root(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    uri = store.put(png_bytes(1))
    assert store.read(uri, max_bytes=10_000) == png_bytes(1)
    (tmp_path / "secret.png").write_bytes(png_bytes(2))
    for foreign in ((tmp_path / "secret.png").as_uri(),
                    (tmp_path / "blobs" / ".." / "secret.png").as_uri(), "s3://b/k.png"):
        with pytest.raises(BlobUriError):
            store.read(foreign, max_bytes=10_000)
    with pytest.raises(BlobTooLargeError):
        store.read(uri, max_bytes=10)
    store.delete(uri)
    with pytest.raises(BlobNotFoundError):
        store.read(uri, max_bytes=10_000)


def test_an_unwritable_root_is_a_blob_store_error(tmp_path):
    (tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(BlobStoreError, match="cannot store"):
        LocalBlobStore(tmp_path / "not-a-dir").put(png_bytes(1))
