"""Video file or RTSP camera → JPEG frames, with OpenCV (``opencv-python-headless``, FFmpeg).

A file path and an ``rtsp://`` (or ``http://``) URL go through the same code: FFmpeg opens
both, ``grab`` advances the stream and ``retrieve`` decodes only the frames that are kept.
The tests read an MJPG AVI they write with ``cv2.VideoWriter``; an RTSP camera differs only
in the URL (no RTSP server is exercised here). For RTSP over TCP instead of UDP, set
``OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp"`` in the environment. When a stream
stops delivering frames the iteration ends; the process supervisor restarts ingest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.envelope import FrameEnvelope


class VideoSourceError(RuntimeError):
    """The video could not be opened, or a kept frame could not be decoded or encoded."""


def is_stream_url(source: str) -> bool:
    """True for a network stream (``rtsp://``, ``http://``...), False for a file path."""
    return "://" in source and not source.startswith("file://")


@dataclass(frozen=True)
class VideoSource:
    """Frames of one video file or camera stream.

    Attributes:
        source: A file path or a stream URL (``rtsp://user:pass@cam-03/stream1``).
        product: Product of every frame.
        camera_id: Camera id of every frame.
        stride: Keep every ``stride``-th frame of the stream (1 = all).
        max_fps: Keep at most this many frames per second of stream time (None = no cap).
        jpeg_quality: JPEG quality of the encoded frames (1-100).
        max_frames: Stop after this many kept frames (None = until the stream ends).
        stream_id: Prefix of the frame ids. Default: the file name's stem for a file (a
            re-read yields the same ids and is deduplicated downstream); for a stream, the
            UTC time it was opened (a reconnect restarts the position, not the ids).
        timeout_s: Open and read timeout of the FFmpeg backend.
        metadata: Extra metadata of every frame.
    """

    source: str
    product: str
    camera_id: str
    stride: int = 1
    max_fps: float | None = None
    jpeg_quality: int = 90
    max_frames: int | None = None
    stream_id: str | None = None
    timeout_s: float = 10.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stride < 1:
            msg = f"stride must be >= 1, got {self.stride}"
            raise ValueError(msg)
        if not 1 <= self.jpeg_quality <= 100:
            msg = f"jpeg_quality must be in 1..100, got {self.jpeg_quality}"
            raise ValueError(msg)

    def frames(self, stop: threading.Event | None = None) -> Iterator[FrameEnvelope]:
        """Yield JPEG envelopes until the stream ends, ``max_frames`` or ``stop``.

        ``frame_id`` is ``<stream_id>-<position>``, the position being the 0-based index of
        the frame in the stream (skipped frames count). ``captured_at`` is the time the
        frame was read; ``metadata`` holds ``position`` and ``position_ms`` (stream time).

        Raises:
            VideoSourceError: The source cannot be opened, or a frame cannot be decoded.
        """
        import cv2  # heavy; only the video source needs it

        live = is_stream_url(self.source)
        timeout_ms = int(self.timeout_s * 1000)
        capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
        if not capture.isOpened():
            capture.release()
            msg = f"cannot open video {self.source!r} (missing file, unreachable camera, codec)"
            raise VideoSourceError(msg)
        stream_id = self.stream_id or (
            datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") if live else Path(self.source).stem)
        min_gap_ms = 1000.0 / self.max_fps if self.max_fps else 0.0
        opened = time.monotonic()
        last_kept_ms: float | None = None
        kept = 0
        position = -1
        try:
            while (self.max_frames is None or kept < self.max_frames) and not (
                    stop is not None and stop.is_set()):
                if not capture.grab():
                    return  # end of file, or the stream stopped delivering frames
                position += 1
                # Live streams pace themselves: wall time; files: the container's timestamps.
                at_ms = ((time.monotonic() - opened) * 1000.0 if live
                         else float(capture.get(cv2.CAP_PROP_POS_MSEC)))
                if position % self.stride:
                    continue
                if last_kept_ms is not None and at_ms - last_kept_ms < min_gap_ms - 1e-6:
                    continue
                ok, image = capture.retrieve()
                if not ok or image is None:
                    msg = f"cannot decode frame {position} of {self.source!r}"
                    raise VideoSourceError(msg)
                ok, encoded = cv2.imencode(".jpg", image,
                                           [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if not ok:
                    msg = f"cannot JPEG-encode frame {position} of {self.source!r}"
                    raise VideoSourceError(msg)
                last_kept_ms = at_ms
                kept += 1
                yield FrameEnvelope(
                    camera_id=self.camera_id,
                    frame_id=f"{stream_id}-{position:09d}",
                    product=self.product,
                    captured_at=datetime.now(UTC),
                    image=encoded.tobytes(),
                    metadata={"position": position, "position_ms": round(at_ms, 1),
                              **self.metadata},
                )
        finally:
            capture.release()
