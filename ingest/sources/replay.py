"""Replay of a stored image set at a given rate, with its ground-truth labels.

Three layouts are recognised, checked in this order:

* an MVTec-AD category: ``ROOT/test/<type>/*.png`` (``good`` or a defect type); the product
  is the folder's name;
* an MVTec-AD dataset: ``ROOT/<category>/test/<type>/*.png``; one product per category;
* a plain folder of images: ``ROOT/*.png``; no label.

Each frame's ``metadata`` carries ``label`` (the ``<type>`` folder: ``good`` or the defect
type), ``anomalous`` (``label != "good"``) and ``source`` (the path under ROOT), so the
verdicts of a replay can be scored against the truth. ``frame_id`` is that path (prefixed by
``run_id`` if given): replaying the same set twice is deduplicated downstream unless each run
has its own ``run_id``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic, sleep

from ingest.envelope import FrameEnvelope
from ingest.sources.files import image_files
from ingest.sources.pacing import Pacer

GOOD = "good"


@dataclass(frozen=True)
class StoredImage:
    """One image of a stored set and what is known about it."""

    path: Path
    product: str
    source: str  # the path under the set's root, without suffix ("bottle/test/crack/000")
    label: str | None = None


def _category(folder: Path, split: str, product: str, prefix: str) -> list[StoredImage]:
    items = []
    for type_dir in sorted(p for p in (folder / split).iterdir() if p.is_dir()):
        for path in image_files(type_dir):
            source = f"{prefix}{split}/{type_dir.name}/{path.stem}"
            items.append(StoredImage(path=path, product=product, source=source,
                                     label=type_dir.name))
    return items


def stored_set(root: Path, *, split: str = "test", product: str | None = None
               ) -> list[StoredImage]:
    """List the images of ``root`` (see the module docstring for the layouts).

    Args:
        root: The set's folder.
        split: MVTec split to replay (``test``; ``train`` holds only ``good``).
        product: Product of every frame; default: the category folder's name (MVTec), or
            the folder's name for a plain folder.

    Raises:
        FileNotFoundError: ``root`` holds no image in any recognised layout.
    """
    root = Path(root)
    if (root / split).is_dir():
        items = _category(root, split, product or root.name, "")
    else:
        categories = sorted(p for p in root.iterdir() if (p / split).is_dir())
        if categories:
            items = [item for c in categories
                     for item in _category(c, split, product or c.name, f"{c.name}/")]
        else:
            items = [StoredImage(path=p, product=product or root.name, source=p.stem)
                     for p in image_files(root)]
    if not items:
        msg = f"no images under {root} (MVTec layout with '{split}/' or a folder of images)"
        raise FileNotFoundError(msg)
    return items


def replay(items: Sequence[StoredImage], *, camera_id: str, rate_hz: float | None = None,
           shuffle_seed: int | None = None, run_id: str | None = None,
           clock: Callable[[], float] = monotonic,
           wait: Callable[[float], None] = sleep) -> Iterator[FrameEnvelope]:
    """Yield one envelope per stored image, paced at ``rate_hz`` (None: as fast as possible).

    Args:
        items: From :func:`stored_set`.
        camera_id: Camera id of every frame.
        rate_hz: Frames per second; ``captured_at`` is stamped when a frame is emitted.
        shuffle_seed: Interleave good and defective images in a seeded random order
            (default: the sorted order of the set).
        run_id: Prefix of every frame id, so that a second replay is not deduplicated.
        clock: Monotonic clock of the pacing, in seconds.
        wait: Sleep function of the pacing, in seconds.
    """
    order = list(items)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    pacer = Pacer(rate_hz, clock=clock, sleep=wait)
    for item in order:
        data = item.path.read_bytes()
        metadata: dict[str, object] = {"source": item.source}
        if item.label is not None:
            metadata |= {"label": item.label, "anomalous": item.label != GOOD}
        pacer.wait()
        yield FrameEnvelope(
            camera_id=camera_id,
            frame_id=f"{run_id}/{item.source}" if run_id else item.source,
            product=item.product,
            captured_at=datetime.now(UTC),
            image=data,
            metadata=metadata,
        )
