"""Image files as frames: the folder listing shared by every file-based source."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from ingest.envelope import FrameEnvelope, sha256_hex

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_MAX_NAME_CHARS = 180  # frame_id is at most 256 characters


def image_files(folder: Path) -> list[Path]:
    """PNG/JPEG files of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def content_frame_id(name: str, data: bytes) -> str:
    """A frame id fixed by the file's name and content: ``<name>@<sha256[:16]>``.

    Sending the same file again (after a crash, a restart, a replay) yields the same id, so
    the (camera_id, frame_id) key drops the duplicate downstream; a camera that reuses a
    file name for a new picture gets a new id.
    """
    return f"{name[-_MAX_NAME_CHARS:]}@{sha256_hex(data)[:16]}"


def frames_from_files(
    paths: Iterable[Path],
    *,
    product: str,
    camera_id: str,
    start_index: int = 0,
    metadata: dict[str, object] | None = None,
) -> Iterator[FrameEnvelope]:
    """One envelope per file; ``frame_id`` is a running counter, capture time is now."""
    for index, path in enumerate(paths, start=start_index):
        yield FrameEnvelope(
            camera_id=camera_id,
            frame_id=f"{index:08d}",
            product=product,
            captured_at=datetime.now(UTC),
            image=path.read_bytes(),
            metadata={"source": path.name, **(metadata or {})},
        )


def folder_frames(folder: Path, *, product: str, camera_id: str) -> Iterator[FrameEnvelope]:
    """The folder's images once, ids from name and content (a re-run is deduplicated).

    The capture time is the file's modification time.
    """
    for path in image_files(folder):
        data = path.read_bytes()
        yield FrameEnvelope(camera_id=camera_id, product=product,
                            frame_id=content_frame_id(path.name, data),
                            captured_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
                            image=data, metadata={"source": path.name})
