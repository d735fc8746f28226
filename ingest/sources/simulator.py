"""Line simulator for load tests: frames of several cameras at a target rate.

Each emitted frame is a good image, or with probability ``defect_fraction`` a defective
one, drawn (seeded) from the images given; cameras take turns, so ``rate_hz`` is the rate of
the whole line and each of ``n`` cameras runs at ``rate_hz / n``. ``captured_at`` is stamped
when the frame is emitted (after the pacing wait), so end-to-end latency measured from it
includes any queueing downstream of the simulator but not the simulator's own schedule.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic, sleep

from ingest.envelope import FrameEnvelope
from ingest.sources.files import image_files
from ingest.sources.pacing import Pacer

GOOD = "good"


@dataclass(frozen=True)
class SimImage:
    """An encoded image the simulator can emit, and its truth (``good`` or a defect kind)."""

    data: bytes
    label: str = GOOD
    name: str = ""

    @property
    def anomalous(self) -> bool:
        """Whether the image shows a defect."""
        return self.label != GOOD


def images_from_folders(good: Path, defective: Mapping[str, Path] | None = None,
                        *, limit: int | None = None) -> list[SimImage]:
    """Load PNG/JPEG files: ``good``'s as ``good``, each ``defective[label]`` folder's as label.

    Args:
        good: Folder of normal images.
        defective: Defect label -> folder of images showing it.
        limit: At most this many files per folder (the first by name).
    """
    folders: list[tuple[str, Path]] = [(GOOD, Path(good))]
    folders += [(label, Path(folder)) for label, folder in (defective or {}).items()]
    return [SimImage(data=p.read_bytes(), label=label, name=p.name)
            for label, folder in folders for p in image_files(folder)[:limit]]


def camera_ids(cameras: int | Sequence[str]) -> list[str]:
    """``3`` -> ``["cam-01", "cam-02", "cam-03"]``; a sequence of ids is kept as given."""
    if isinstance(cameras, int):
        if cameras < 1:
            msg = f"cameras must be >= 1, got {cameras}"
            raise ValueError(msg)
        return [f"cam-{i:02d}" for i in range(1, cameras + 1)]
    ids = list(cameras)
    if not ids or len(set(ids)) != len(ids):
        msg = f"camera ids must be distinct and at least one, got {ids}"
        raise ValueError(msg)
    return ids


class LineSimulator:
    """An endless (or ``frames``-long) stream of frames from ``images``.

    Args:
        images: Good and defective images to draw from.
        product: Product of every frame.
        cameras: Number of cameras (``cam-01``...) or their ids.
        rate_hz: Frames per second of the whole line; None: as fast as possible.
        defect_fraction: Probability that a frame shows a defect (0..1).
        frames: Stop after this many frames (None: endless).
        seed: Seed of the image draws.
        run_id: Prefix of the frame ids (default: random), so runs never collide.
        clock: Monotonic clock of the pacing, in seconds.
        wait: Sleep function of the pacing, in seconds.

    Example::

        for frame in LineSimulator(images, cameras=4, rate_hz=50, frames=1000):
            publisher.send(frame)
    """

    def __init__(self, images: Iterable[SimImage], *, product: str = "textile",
                 cameras: int | Sequence[str] = 1, rate_hz: float | None = None,
                 defect_fraction: float = 0.1, frames: int | None = None, seed: int = 0,
                 run_id: str | None = None, clock: Callable[[], float] = monotonic,
                 wait: Callable[[float], None] = sleep) -> None:
        images = list(images)
        self.good = [i for i in images if not i.anomalous]
        self.defective = [i for i in images if i.anomalous]
        if not 0.0 <= defect_fraction <= 1.0:
            msg = f"defect_fraction must be in [0, 1], got {defect_fraction}"
            raise ValueError(msg)
        if defect_fraction > 0 and not self.defective:
            msg = "defect_fraction > 0 needs at least one defective image"
            raise ValueError(msg)
        if defect_fraction < 1 and not self.good:
            msg = "defect_fraction < 1 needs at least one good image"
            raise ValueError(msg)
        self.product = product
        self.cameras = camera_ids(cameras)
        self.rate_hz = rate_hz
        self.defect_fraction = defect_fraction
        self.frames = frames
        self.seed = seed
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self._clock = clock
        self._wait = wait

    def __iter__(self) -> Iterator[FrameEnvelope]:
        """Iterate the frames (see :meth:`stream`)."""
        return self.stream()

    def stream(self, stop: threading.Event | None = None) -> Iterator[FrameEnvelope]:
        """Yield frames until ``frames`` were emitted or ``stop`` is set."""
        rng = random.Random(self.seed)
        pacer = Pacer(self.rate_hz, clock=self._clock, sleep=self._wait)
        counts = dict.fromkeys(self.cameras, 0)
        emitted = 0
        while self.frames is None or emitted < self.frames:
            if stop is not None and stop.is_set():
                return
            camera = self.cameras[emitted % len(self.cameras)]
            defect = rng.random() < self.defect_fraction
            image = rng.choice(self.defective if defect else self.good)
            pacer.wait()
            yield FrameEnvelope(
                camera_id=camera,
                frame_id=f"{self.run_id}-{counts[camera]:09d}",
                product=self.product,
                captured_at=datetime.now(UTC),
                image=image.data,
                metadata={"label": image.label, "anomalous": image.anomalous,
                          "source": image.name, "sim_run": self.run_id},
            )
            counts[camera] += 1
            emitted += 1


def textile_line_images(limit: int | None = None) -> list[SimImage]:
    """The textile images of `conformal-clip-data` (good, ``local`` and ``global`` defects)."""
    import conformal_clip_data as data

    return images_from_folders(data.nominal_dir(),
                               {"local": data.local_dir(), "global": data.global_dir()},
                               limit=limit)


def simulator_images(location: str | None) -> list[SimImage]:
    """Images of ``location`` for the simulator; without a location, the textile line.

    ``good/`` + one subfolder per defect label (an MVTec category's ``test/`` works too).
    """
    if location is None:
        return textile_line_images()
    root = Path(location)
    root = root / "test" if (root / "test" / "good").is_dir() else root
    if not (root / "good").is_dir():
        msg = f"{location}: expected a good/ subfolder (and one subfolder per defect label)"
        raise FileNotFoundError(msg)
    defective = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and p.name != "good"}
    return images_from_folders(root / "good", defective)
