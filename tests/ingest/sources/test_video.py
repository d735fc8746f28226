"""The video source on a real MJPG AVI written with OpenCV (the FFmpeg path RTSP also takes)."""

import socket

import cv2
import numpy as np
import pytest

from ingest.envelope import decode, image_format
from ingest.sources.video import VideoSource, VideoSourceError, is_stream_url

FPS = 10.0
SIZE = (64, 48)  # width, height


@pytest.fixture
def video(tmp_path) -> str:
    """12 frames at 10 fps; frame i is uniformly grey at level 20 * i."""
    path = tmp_path / "line3.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    assert writer.isOpened()
    for i in range(12):
        writer.write(np.full((SIZE[1], SIZE[0], 3), 20 * i, np.uint8))
    writer.release()
    return str(path)


def grey_level(jpeg: bytes) -> float:
    return float(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE).mean())


def source(path: str, **kwargs) -> VideoSource:
    return VideoSource(path, product="bracket", camera_id="cam-07", **kwargs)


def test_every_frame_becomes_a_jpeg_envelope_in_stream_order(video):
    frames = list(source(video).frames())

    assert len(frames) == 12
    assert [f.frame_id for f in frames] == [f"line3-{i:09d}" for i in range(12)]
    assert all(image_format(f.image) == "jpeg" for f in frames)
    assert [round(grey_level(f.image) / 20) for f in frames] == list(range(12))
    assert [f.metadata["position_ms"] for f in frames[:3]] == [0.0, 100.0, 200.0]
    assert decode(frames[3].encode()) == frames[3]
    assert [f.captured_at for f in frames] == sorted(f.captured_at for f in frames)


def test_stride_keeps_every_nth_frame(video):
    frames = list(source(video, stride=4).frames())
    assert [f.metadata["position"] for f in frames] == [0, 4, 8]
    assert [round(grey_level(f.image) / 20) for f in frames] == [0, 4, 8]


def test_max_fps_caps_frames_per_second_of_stream_time(video):
    frames = list(source(video, max_fps=4.0).frames())  # >= 250 ms apart at 10 fps
    assert [f.metadata["position"] for f in frames] == [0, 3, 6, 9]


def test_max_frames_and_a_fixed_stream_id(video):
    frames = list(source(video, max_frames=2, stream_id="shift-2").frames())
    assert [f.frame_id for f in frames] == ["shift-2-000000000", "shift-2-000000001"]


def test_reading_the_file_again_gives_the_same_ids(video):
    first = [f.frame_id for f in source(video, stride=3).frames()]
    assert first == [f.frame_id for f in source(video, stride=3).frames()]


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(VideoSourceError, match="cannot open video"):
        next(source(str(tmp_path / "absent.avi")).frames())


def test_an_unreachable_rtsp_camera_is_a_clear_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"rtsp://127.0.0.1:{port}/stream1"
    assert is_stream_url(url)
    with pytest.raises(VideoSourceError, match="cannot open video"):
        next(source(url, timeout_s=2.0).frames())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="stride"):
        source("x.avi", stride=0)
    with pytest.raises(ValueError, match="jpeg_quality"):
        source("x.avi", jpeg_quality=0)
