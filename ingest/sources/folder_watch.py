"""Folder watcher: a camera (or its PC) drops image files in a folder; each is sent once.

Conventions a line engineer can check with ``ls``:

* **Complete files only.** A file is sent once its size and modification time have not
  changed for ``settle_s`` seconds across two polls. Writers that can should write
  ``name.png.part`` (or a hidden ``.name.png``) and rename it when done: names that do not
  end in ``.png``/``.jpg``/``.jpeg``, and hidden names, are never picked up.
* **Sent files move to ``sent/``** (a subfolder of the watched folder), after the broker
  has acknowledged them. The incoming folder therefore holds exactly what is still to send;
  a restart resumes from it.
* **Idempotent ids.** ``frame_id`` is ``<file name>@<sha256[:16]>``: a crash between the
  acknowledgement and the move re-sends the file under the same id, and the unique
  (camera_id, frame_id) key drops the duplicate downstream.
* ``captured_at`` is the file's modification time (when the camera wrote it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic

from ingest.envelope import FrameEnvelope, sha256_hex
from ingest.publisher import FramePublisher
from ingest.sources.files import IMAGE_SUFFIXES, content_frame_id

log = logging.getLogger(__name__)

SENT_DIR = "sent"


@dataclass(frozen=True)
class ReadyFile:
    """A complete file and the envelope made from it."""

    path: Path
    frame: FrameEnvelope


class FolderWatcher:
    """Polls one folder for complete image files not yet sent.

    Args:
        folder: The watched folder.
        product: Product of every frame.
        camera_id: Camera id of every frame.
        settle_s: How long size and mtime must stay unchanged before a file is read.
        max_batch: Most files returned by one poll (bounds memory on a backlog).
        metadata: Extra metadata of every frame.
        clock: Monotonic clock in seconds.
    """

    def __init__(self, folder: Path, *, product: str, camera_id: str, settle_s: float = 0.5,
                 max_batch: int = 64, metadata: dict[str, object] | None = None,
                 clock: Callable[[], float] = monotonic) -> None:
        self.folder = Path(folder)
        self.sent_dir = self.folder / SENT_DIR
        self.product = product
        self.camera_id = camera_id
        self.settle_s = settle_s
        self.max_batch = max_batch
        self.metadata = dict(metadata or {})
        self._clock = clock
        # name -> (size, mtime_ns, monotonic time that state was first seen)
        self._seen: dict[str, tuple[int, int, float]] = {}

    def _candidates(self) -> list[os.DirEntry[str]]:
        with os.scandir(self.folder) as entries:
            return [e for e in entries
                    if not e.name.startswith(".")
                    and Path(e.name).suffix.lower() in IMAGE_SUFFIXES
                    and e.is_file(follow_symlinks=False)]

    def poll(self) -> list[ReadyFile]:
        """Files complete since the previous poll, oldest first (at most ``max_batch``)."""
        now = self._clock()
        seen: dict[str, tuple[int, int, float]] = {}
        stable: list[tuple[int, str]] = []
        for entry in self._candidates():
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # renamed or deleted since the listing
            state = (stat.st_size, stat.st_mtime_ns)
            before = self._seen.get(entry.name)
            since = before[2] if before and before[:2] == state else now
            seen[entry.name] = (*state, since)
            if before and before[:2] == state and stat.st_size > 0 and now - since >= self.settle_s:
                stable.append((stat.st_mtime_ns, entry.name))
        self._seen = seen
        ready = []
        for mtime_ns, name in sorted(stable)[: self.max_batch]:
            path = self.folder / name
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.warning("cannot read %s, retrying at the next poll: %s", path, exc)
                continue
            ready.append(ReadyFile(path=path, frame=self._frame(name, data, mtime_ns)))
        return ready

    def _frame(self, name: str, data: bytes, mtime_ns: int) -> FrameEnvelope:
        return FrameEnvelope(
            camera_id=self.camera_id,
            frame_id=content_frame_id(name, data),
            product=self.product,
            captured_at=datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC),
            image=data,
            image_sha256=sha256_hex(data),
            metadata={"source": name, **self.metadata},
        )

    def mark_sent(self, files: list[ReadyFile]) -> None:
        """Move acknowledged files into ``sent/`` (a name already there gets its hash added)."""
        self.sent_dir.mkdir(exist_ok=True)
        for ready in files:
            target = self.sent_dir / ready.path.name
            if target.exists():
                digest = ready.frame.frame_id.rsplit("@", 1)[-1]
                target = self.sent_dir / f"{ready.path.stem}@{digest}{ready.path.suffix}"
            os.replace(ready.path, target)
            self._seen.pop(ready.path.name, None)


def watch_folder(watcher: FolderWatcher, publisher: FramePublisher, *,
                 stop: threading.Event, poll_s: float = 0.25) -> int:
    """Send every complete file until ``stop`` is set; return how many were sent.

    Files move to ``sent/`` only after the publisher's flush succeeded, so a broker outage
    (TransportError) leaves them in place for the next run.
    """
    total = 0
    while not stop.is_set():
        ready = watcher.poll()
        for item in ready:
            publisher.send(item.frame)
        if ready:
            publisher.flush()
            watcher.mark_sent(ready)
            total += len(ready)
            log.info("sent %d files from %s (%d in total)", len(ready), watcher.folder, total)
        stop.wait(poll_s)
    return total
