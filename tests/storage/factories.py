"""Small builders of test rows (also used by the review tests to seed a database)."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from PIL import Image

from storage.repositories import VerdictRecord

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def png_bytes(color: tuple[int, int, int] = (128, 128, 128), size: int = 8) -> bytes:
    """Encode a solid-colour RGB square as PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(size: int = 8) -> bytes:
    """Encode a binary mask (255 in the left half) as PNG."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:, : size // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


def make_record(index: int = 0, **overrides: Any) -> VerdictRecord:
    """A plausible verdict for frame ``f-<index>`` of camera ``cam-a``; fields overridable."""
    anomalous = overrides.pop("anomalous", index % 2 == 1)
    record = VerdictRecord(
        camera_id="cam-a",
        frame_id=f"f-{index}",
        product="bottle",
        captured_at=T0 + timedelta(seconds=index),
        image=png_bytes(),
        image_uri=None,
        metadata={"line": 3, "lot": f"L{index}"},
        score=0.9 if anomalous else 0.1,
        threshold=0.5,
        anomalous=anomalous,
        positions=["top left"] if anomalous else [],
        answer=f"Yes: frame {index} has a defect." if anomalous else "No anomaly.",
        mask_png=mask_png() if anomalous else None,
        model_id="tiny-test",
        latency_ms=12.5,
        worker="worker-0",
    )
    return replace(record, **overrides)
