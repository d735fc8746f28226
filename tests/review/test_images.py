"""The dashboard's frame images: inline bytes, else the blob store by URI (moto's S3 server)."""

from __future__ import annotations

from ingest.blobstore import open_blob_store
from review.images import blob_store_from_env, load_frame_image
from tests.fixtures.processes import TcpProxy
from tests.fixtures.s3 import S3Location
from tests.storage.factories import png_bytes


def test_reads_s3_images_and_says_why_when_it_cannot(s3_location: S3Location) -> None:
    options = s3_location.options()
    env = {"AGPT_BLOB_STORE": s3_location.location,
           **{f"AGPT_S3_{key.upper()}": str(value) for key, value in options.items()}}
    store = blob_store_from_env(env)
    uri = open_blob_store(s3_location.location, **options).put(png_bytes((9, 9, 9), size=16))

    assert load_frame_image(store=store, inline=None, uri=uri)[0] == png_bytes((9, 9, 9), size=16)
    assert load_frame_image(store=store, inline=b"old", uri=None) == (b"old", "")
    assert "not kept" in load_frame_image(store=store, inline=None, uri=None)[1]
    assert "cannot be read" in load_frame_image(store=store, inline=None,
                                                uri="s3://elsewhere/x.png")[1]
    store.delete(uri)
    assert "deleted" in load_frame_image(store=store, inline=None, uri=uri)[1]


def test_an_unreachable_store_is_reported_not_raised(s3_location: S3Location) -> None:
    host, port = s3_location.endpoint_url.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port)).start()
    try:
        store = open_blob_store(s3_location.location,
                                **s3_location.options(f"http://127.0.0.1:{proxy.port}"))
        uri = store.put(png_bytes())
        proxy.down()
        image, why = load_frame_image(store=store, inline=None, uri=uri)
    finally:
        proxy.close()

    assert image is None
    assert "unreachable" in why
