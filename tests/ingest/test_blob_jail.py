"""The blob store is a jail: a hostile ``image_uri`` reads nothing outside it."""

import os
import sys
import time
from pathlib import Path

import pytest

from inference.images import read_from_store
from ingest import blob_jail
from ingest.blobstore import BlobUnavailableError, LocalBlobStore
from ingest.envelope import FrameError

MAX = 1024 * 1024


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    (root / "ab").mkdir(parents=True)
    (root / "ab" / "blob.png").write_bytes(b"inside")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"secret pixels")
    return LocalBlobStore(root)


def read(store, uri, max_bytes=MAX):
    """What the worker does with a claim check: read it through its store."""
    return read_from_store(store, uri, max_bytes=max_bytes)


def refused(store, uri, reason="not_in_store"):
    with pytest.raises(FrameError) as info:
        read(store, uri)
    assert (info.value.reason, info.value.field_name) == (reason, "image_uri"), str(info.value)
    return str(info.value)


def test_a_blob_inside_is_read_however_the_uri_spells_it(store):
    root = store.root
    assert read(store, (root / "ab" / "blob.png").as_uri()) == b"inside"
    for uri in (f"file://{root}//ab///blob.png", f"file://{root}/./ab/blob.png",
                f"file://localhost{root}/ab/blob.png", f"file://{root}/a%62/blob%2Epng",
                f"FILE://{root}/ab/blob.png"):
        assert read(store, uri) == b"inside", uri


@pytest.mark.parametrize("spelling", [
    "{root}/../elsewhere/x.png",
    "{root}/ab/../../elsewhere/x.png",
    "{root}/%2e%2e/elsewhere/x.png",
    "{root}/%2E%2E/elsewhere/x.png",
    "{root}/ab/..%2F..%2Felsewhere/x.png",
    "{root}/..//elsewhere/x.png",
    "{tmp}/elsewhere/x.png",
    "{root}x/../elsewhere/x.png",
])
def test_escapes_with_dots_and_encodings_are_refused(store, spelling):
    uri = "file://" + spelling.format(root=store.root, tmp=store.root.parent)
    refused(store, uri)


def test_a_symlink_out_of_the_store_is_not_followed(store):
    outside = store.root.parent / "elsewhere"
    (store.root / "ab" / "link.png").symlink_to(outside / "x.png")
    (store.root / "dirlink").symlink_to(outside)
    (store.root / "ab" / "inner.png").symlink_to(store.root / "ab" / "blob.png")
    refused(store, (store.root / "ab" / "link.png").as_uri())
    refused(store, f"file://{store.root}/dirlink/x.png")
    refused(store, (store.root / "ab" / "inner.png").as_uri())  # links are never followed


@pytest.mark.parametrize("uri", ["file:///etc/shadow", "file:///proc/self/environ",
                                 "file:///dev/zero", "file:///etc/passwd",
                                 "file://attacker.example/share/x.png",
                                 "file:///x.png?../../etc/passwd", "file:relative/x.png",
                                 "file:///%00/x.png", "file:///%ff%fe.png", "file://[/x"])
def test_system_files_and_odd_uris_are_refused(store, uri):
    refused(store, uri)


def test_other_schemes_are_not_this_store(store):
    for uri in ("s3://bucket/x.png", "http://127.0.0.1/x.png", "/etc/passwd"):
        refused(store, uri, "bad_uri")


def test_missing_and_existing_files_outside_get_the_same_answer(store):
    outside = store.root.parent / "elsewhere"
    exists = refused(store, (outside / "x.png").as_uri())
    missing = refused(store, (outside / "y.png").as_uri())
    assert exists.replace("x.png", "?") == missing.replace("y.png", "?")
    inside_missing = refused(store, (store.root / "ab" / "nope.png").as_uri())
    assert inside_missing.replace(str(store.root / "ab" / "nope.png"), "?") == \
        exists.replace(str(outside / "x.png"), "?")


def test_a_fifo_or_device_in_the_store_is_refused_without_blocking(store):
    fifo = store.root / "ab" / "fifo.png"
    os.mkfifo(fifo)  # nobody writes: a plain open() would block forever
    started = time.monotonic()
    refused(store, fifo.as_uri())
    assert time.monotonic() - started < 2
    (store.root / "ab" / "sub").mkdir()
    refused(store, (store.root / "ab" / "sub").as_uri())


def test_the_size_cap_holds_while_reading(store):
    big = store.root / "ab" / "big.png"
    big.write_bytes(b"x" * 5000)
    assert read(store, big.as_uri(), max_bytes=5000) == b"x" * 5000
    with pytest.raises(FrameError) as info:
        read(store, big.as_uri(), max_bytes=4999)
    assert info.value.reason == "oversized"


def test_a_read_that_hangs_times_out(store, monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(3)
        return b""

    monkeypatch.setattr(blob_jail, "_read_below", hang)
    slow = LocalBlobStore(store.root, read_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(BlobUnavailableError):  # a hung share: the batch pauses, no DLQ
        read(slow, (store.root / "ab" / "blob.png").as_uri())
    assert time.monotonic() - started < 2


def test_a_store_reached_through_a_symlink_accepts_both_spellings(tmp_path, store):
    alias = tmp_path / "alias"
    alias.symlink_to(store.root)
    via_alias = LocalBlobStore(alias)
    assert read(via_alias, f"file://{alias}/ab/blob.png") == b"inside"
    assert read(via_alias, f"file://{store.root}/ab/blob.png") == b"inside"


def test_nothing_outside_the_store_is_opened(store):
    outside = str(store.root.parent / "elsewhere")
    opened: list[str] = []
    recording = [True]

    def audit(event, args):
        if recording[0] and event == "open" and isinstance(args[0], str | bytes):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(audit)  # hooks cannot be removed: it stops recording below
    try:
        for spelling in ("{o}/x.png", "{r}/../elsewhere/x.png", "{r}/%2e%2e/elsewhere/x.png"):
            refused(store, "file://" + spelling.format(o=outside, r=store.root))
        assert read(store, (store.root / "ab" / "blob.png").as_uri())
    finally:
        recording[0] = False
    assert "blob.png" in opened  # the hook sees the jail's opens
    assert not [p for p in opened if p.startswith(outside) or "elsewhere" in p]
    assert Path(outside, "x.png").read_bytes() == b"secret pixels"
