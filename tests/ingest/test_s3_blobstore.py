"""The S3 blob store against a real S3 API (moto's server on loopback)."""

from __future__ import annotations

import pytest

from ingest.blobstore import (
    BlobNotFoundError,
    BlobTooLargeError,
    BlobUnavailableError,
    BlobUriError,
    open_blob_store,
)
from ingest.envelope import sha256_hex
from ingest.s3_blobstore import S3BlobStore
from tests.fixtures.processes import TcpProxy
from tests.fixtures.s3 import S3Location
from tests.storage.factories import png_bytes


@pytest.fixture
def store(s3_location: S3Location) -> S3BlobStore:
    opened = open_blob_store(s3_location.location, **s3_location.options())
    assert isinstance(opened, S3BlobStore)
    return opened


def test_put_read_delete_round_trip(store: S3BlobStore, s3_location: S3Location) -> None:
    data = png_bytes((10, 20, 30), size=32)

    uri = store.put(data)

    digest = sha256_hex(data)
    assert uri == f"s3://{s3_location.bucket}/frames/{digest[:2]}/{digest}.png"
    assert store.read(uri, max_bytes=10_000) == data
    assert store.put(data) == uri  # content-addressed: the same object
    store.delete(uri)
    with pytest.raises(BlobNotFoundError):
        store.read(uri, max_bytes=10_000)
    store.delete(uri)  # deleting again is harmless


def test_read_refuses_uris_outside_the_store(store: S3BlobStore,
                                             s3_location: S3Location) -> None:
    uri = store.put(png_bytes())
    key = uri.removeprefix(f"s3://{s3_location.bucket}/")
    for foreign in (f"s3://other-bucket/{key}", f"s3://{s3_location.bucket}/elsewhere/x.png",
                    f"s3://{s3_location.bucket}/frames/../secret.png",
                    f"s3://{s3_location.bucket}/frames//x.png", "file:///etc/passwd",
                    f"https://{s3_location.bucket}/{key}"):
        with pytest.raises(BlobUriError):
            store.read(foreign, max_bytes=10_000)
        with pytest.raises(BlobUriError):
            store.delete(foreign)


def test_read_stops_at_the_limit(store: S3BlobStore) -> None:
    data = png_bytes(size=64)
    uri = store.put(data)

    with pytest.raises(BlobTooLargeError):
        store.read(uri, max_bytes=len(data) - 1)
    assert store.read(uri, max_bytes=len(data)) == data


def test_unreachable_store_is_unavailable_not_missing(s3_location: S3Location) -> None:
    host, port = s3_location.endpoint_url.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port)).start()
    try:
        store = open_blob_store(s3_location.location,
                                **s3_location.options(f"http://127.0.0.1:{proxy.port}"))
        uri = store.put(png_bytes())
        proxy.down()
        with pytest.raises(BlobUnavailableError):
            store.read(uri, max_bytes=10_000)
        with pytest.raises(BlobUnavailableError):
            store.put(png_bytes((1, 2, 3)))
        proxy.up()
        assert store.read(uri, max_bytes=10_000) == png_bytes()
    finally:
        proxy.close()


def test_missing_bucket_is_unavailable(s3_location: S3Location) -> None:
    store = open_blob_store(f"s3://no-such-bucket-{s3_location.bucket}/p",
                            **s3_location.options())
    with pytest.raises(BlobUnavailableError, match="NoSuchBucket"):
        store.put(png_bytes())


def test_location_without_bucket_is_refused() -> None:
    with pytest.raises(Exception, match="expected s3://bucket"):
        S3BlobStore.from_location("s3:///prefix")
