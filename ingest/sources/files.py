"""Camera sources that turn image files into frame envelopes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from ingest.envelope import FrameEnvelope

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


def image_files(folder: Path) -> list[Path]:
    """PNG/JPEG files of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


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
