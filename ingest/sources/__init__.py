"""Camera sources: each turns what a camera produces into frame envelopes.

| module | source |
|---|---|
| ``files`` | a list of image files (one-shot) |
| ``folder_watch`` | a folder a camera drops files into, watched until stopped |
| ``video`` | a video file or an RTSP/HTTP camera stream (OpenCV) |
| ``replay`` | a stored set (MVTec layout or plain folder) at a given rate, with labels |
| ``simulator`` | a synthetic multi-camera line for load tests |
| ``pacing`` | the fixed-rate schedule the paced sources share |
"""

from ingest.sources.files import IMAGE_SUFFIXES, content_frame_id, frames_from_files, image_files
from ingest.sources.pacing import Pacer, paced

__all__ = ["IMAGE_SUFFIXES", "Pacer", "content_frame_id", "frames_from_files", "image_files",
           "paced"]
