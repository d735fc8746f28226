"""Hypothesis strategies for hostile frame messages, each labelled with the kind it tries.

A message is built from a header dict (every field drawn from valid values, hostile text,
wrong types, huge or non-finite numbers, nesting, dates at the calendar's ends, URIs that try
to leave the blob store) and an image part (PNG/JPEG/other formats in many modes and sizes,
truncated or bit-flipped), or is raw bytes around the envelope prefix.
"""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from ingest.envelope import MAGIC, sha256_hex


@dataclass(frozen=True)
class Places:
    """Where URIs may point: the store (with a valid blob) and an outside directory."""

    store: Path
    blob: Path  # a valid image inside the store
    outside: Path  # a directory next to the store, with x.png (the same image) and a FIFO

    def forbidden(self) -> tuple[str, ...]:
        """Paths no open() may ever name."""
        return (str(self.outside), "/etc/shadow", "/etc/passwd", "/proc/self/environ",
                "/dev/zero", "/dev/urandom")


@dataclass(frozen=True)
class Hostile:
    """One message and what it tries."""

    kind: str
    value: bytes


def make_places(root: Path, image: bytes) -> Places:
    """Create a store with one blob and an outside directory with a copy and a FIFO."""
    store, outside = root / "store", root / "outside"
    (store / "ab").mkdir(parents=True, exist_ok=True)
    outside.mkdir(exist_ok=True)
    blob = store / "ab" / "blob.png"
    blob.write_bytes(image)
    (outside / "x.png").write_bytes(image)
    (store / "ab" / "escape.png").unlink(missing_ok=True)
    (store / "ab" / "escape.png").symlink_to(outside / "x.png")
    for fifo in (outside / "fifo.png", store / "ab" / "fifo.png"):
        if not fifo.exists():
            os.mkfifo(fifo)
    return Places(store=store, blob=blob, outside=outside)


# -- text and JSON values ---------------------------------------------------------------------
hostile_text = st.one_of(
    st.text(min_size=1, max_size=40),
    st.text(alphabet=st.characters(codec=None, categories=None), min_size=1, max_size=20),
    st.sampled_from(["cam\x00-1", "\udc80", "a\ud800b", "\u0000", " ", "\u202e", "ß" * 129,
                     "x" * 129, "x" * 257, "😀" * 128, "%00", "../..", "NaN"]),
    st.text(min_size=120, max_size=300),
)
valid_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1,
                     max_size=30)
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), hostile_text,
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 10**400]),
)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)),
    max_leaves=20)
wrong_type = st.one_of(st.integers(), st.floats(), st.booleans(), st.lists(st.integers(),
                       max_size=3), st.dictionaries(valid_text, st.integers(), max_size=2))
dates = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
                     "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999+00:00",
                     "2026-02-30T00:00:00", "yesterday", "", "2026-01-01T00:00:00+24:00",
                     "+002026-01-01", "2026-01-01T00:00:00\x00"]),
)


# -- images -------------------------------------------------------------------------------
@st.composite
def images(draw: st.DrawFn) -> bytes:
    """Encoded images: formats, modes, sizes; some truncated or with flipped bytes."""
    width = draw(st.integers(min_value=1, max_value=400))
    height = draw(st.integers(min_value=1, max_value=400))
    fmt = draw(st.sampled_from(["PNG", "PNG", "JPEG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]))
    modes = {"PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
             "JPEG": ["L", "RGB", "CMYK"], "GIF": ["L", "P"], "BMP": ["1", "L", "P", "RGB"],
             "WEBP": ["RGB", "RGBA"], "TIFF": ["1", "L", "RGB", "F"]}[fmt]
    mode = draw(st.sampled_from(modes))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    base = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    base.convert(mode).save(buffer, format=fmt)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]
    elif damage == "flip":
        position = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data = data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]
    return data


def uris(places: Places) -> st.SearchStrategy[tuple[str, str]]:
    """(uri, kind): inside, escapes by dots/encodings/links, system files, FIFOs, schemes."""
    store, outside = places.store, places.outside
    return st.sampled_from([
        (places.blob.as_uri(), "uri_inside"),
        (f"file://{store}//ab//blob.png", "uri_inside_doubled_slashes"),
        (f"file://{store}/ab/%62lob.png", "uri_inside_percent"),
        (f"file://{store}/../outside/x.png", "uri_dotdot"),
        (f"file://{store}/ab/%2e%2e/%2e%2e/outside/x.png", "uri_dotdot_encoded"),
        (f"file://{store}/ab/escape.png", "uri_symlink_out"),
        ((outside / "x.png").as_uri(), "uri_outside_exists"),
        ((outside / "y.png").as_uri(), "uri_outside_missing"),
        ((outside / "fifo.png").as_uri(), "uri_fifo_outside"),
        ((store / "ab" / "fifo.png").as_uri(), "uri_fifo_inside"),
        ((store / "ab").as_uri(), "uri_directory"),
        ("file:///etc/shadow", "uri_system"), ("file:///proc/self/environ", "uri_system"),
        ("file:///dev/zero", "uri_device"), ("file:///dev/urandom", "uri_device"),
        ("file:///etc/passwd", "uri_system"), ("s3://bucket/x.png", "uri_scheme"),
        ("http://127.0.0.1:1/x.png", "uri_scheme"), ("file://evil/x.png", "uri_host"),
        (f"file://{store}/ab/blob.png?x", "uri_query"), ("file:///%ff.png", "uri_encoding"),
    ])


def frame_header(places: Places, image: bytes | None,
                 uri: tuple[str, str] | None) -> dict[str, object]:
    """A header that is valid as far as the fields go."""
    header: dict[str, object] = {"camera_id": "cam-fuzz", "frame_id": "f",
                                 "product": "textile", "captured_at": "2026-01-01T00:00:00Z"}
    if uri is not None:
        header["image_uri"] = uri[0]
        header["image_sha256"] = sha256_hex(places.blob.read_bytes())
    return header


def encode(header: object, image: bytes = b"", version: int = 1,
           allow_nan: bool = True) -> bytes:
    """Wire bytes from any header (bypassing the envelope's checks)."""
    body = json.dumps(header, allow_nan=allow_nan).encode("utf-8", "surrogatepass")
    return struct.pack(">4sBI", MAGIC, version, len(body)) + body + image


@st.composite
def hostile_messages(draw: st.DrawFn, places: Places, good_image: bytes) -> Hostile:
    """One labelled hostile (or valid) message."""
    kind = draw(st.sampled_from([
        "valid", "valid_claim_check", "field_text", "field_type", "missing_field",
        "metadata", "captured_at", "image", "uri", "sha256", "raw_bytes", "header_json",
        "schema_version",
    ]))
    frame_id = draw(valid_text)
    header = frame_header(places, None, None)
    header["frame_id"] = f"{frame_id}-{draw(st.integers(0, 10**9))}"
    image = good_image
    if kind == "valid":
        header["metadata"] = draw(st.dictionaries(valid_text, st.integers(0, 100), max_size=3))
    elif kind == "valid_claim_check":
        header.update(image_uri=places.blob.as_uri(),
                      image_sha256=sha256_hex(places.blob.read_bytes()))
        image = b""
    elif kind == "field_text":
        header[draw(st.sampled_from(["camera_id", "frame_id", "product"]))] = draw(hostile_text)
    elif kind == "field_type":
        name = draw(st.sampled_from(["camera_id", "frame_id", "product", "captured_at",
                                     "metadata", "image_uri", "image_sha256"]))
        header[name] = draw(wrong_type)
    elif kind == "missing_field":
        del header[draw(st.sampled_from(["camera_id", "frame_id", "product", "captured_at"]))]
    elif kind == "metadata":
        header["metadata"] = draw(st.one_of(st.dictionaries(valid_text, json_value),
                                            st.dictionaries(hostile_text, json_value),
                                            json_value))
    elif kind == "captured_at":
        header["captured_at"] = draw(dates)
    elif kind == "image":
        image = draw(images())
    elif kind == "uri":
        uri, kind = draw(uris(places))
        header.update(image_uri=uri, image_sha256=sha256_hex(places.blob.read_bytes()))
        image = b""
    elif kind == "sha256":
        header["image_sha256"] = draw(st.one_of(st.text(max_size=70),
                                                st.just(sha256_hex(b"other"))))
    elif kind == "raw_bytes":
        prefix = draw(st.sampled_from([b"", MAGIC, MAGIC + b"\x01", MAGIC + b"\x01\x00\x00"]))
        return Hostile(kind, prefix + draw(st.binary(max_size=200)))
    elif kind == "header_json":
        body = draw(st.one_of(st.binary(max_size=100),
                              st.sampled_from([b"[" * 5000, b'{"a":' * 3000, b"null",
                                               b'{"camera_id":1e999}', b"9" * 5000])))
        return Hostile(kind, struct.pack(">4sBI", MAGIC, 1, len(body)) + body + good_image)
    elif kind == "schema_version":
        return Hostile(kind, encode(header, good_image, version=draw(st.integers(0, 255))))
    return Hostile(kind, encode(header, image))
