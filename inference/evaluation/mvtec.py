"""Reader for the MVTec-AD directory layout (also written by ``synthetic.py``).

Layout of one category::

    <root>/<category>/train/good/*.png            normal images (few-shot references)
    <root>/<category>/test/<defect_type>/*.png    "good" plus one folder per defect type
    <root>/<category>/ground_truth/<defect_type>/<stem>_mask.png   (none for "good")

Only paths are listed here; images are opened by the caller. Masks are loaded as ``bool``
arrays resized with nearest-neighbour so they stay binary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

GOOD = "good"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class TestItem:
    """One test image of a category.

    Attributes:
        path: The image file.
        defect_type: Name of its folder under ``test/`` (``"good"`` for normal images).
        anomalous: ``True`` unless ``defect_type == "good"``.
        mask_path: Its ground-truth mask, ``None`` for good images.
    """

    __test__ = False  # not a pytest test class despite the name

    path: Path
    defect_type: str
    anomalous: bool
    mask_path: Path | None


def list_categories(root: Path) -> list[str]:
    """Categories under ``root``: the sorted names of subfolders that contain ``train/good``.

    Args:
        root: Dataset root (e.g. ``.../mvtec_anomaly_detection``).

    Returns:
        Sorted category names; empty when none is found.

    Raises:
        FileNotFoundError: If ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        msg = f"dataset root {root} is not a directory"
        raise FileNotFoundError(msg)
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


def reference_paths(root: Path, category: str, shots: int) -> list[Path]:
    """The first ``shots`` normal training images of ``category``, in sorted file-name order.

    A fixed, documented choice (not random) so few-shot results are reproducible.

    Args:
        root: Dataset root.
        category: Category folder name.
        shots: Number of references; 0 gives an empty list (zero-shot).

    Returns:
        ``shots`` image paths from ``train/good``.

    Raises:
        ValueError: If ``shots`` is negative or the folder holds fewer images.
        FileNotFoundError: If ``train/good`` does not exist.
    """
    if shots < 0:
        msg = f"shots must be >= 0, got {shots}"
        raise ValueError(msg)
    folder = Path(root) / category / "train" / GOOD
    images = _sorted_images(folder)
    if len(images) < shots:
        msg = f"{folder} holds {len(images)} images, fewer than the {shots} shots requested"
        raise ValueError(msg)
    return images[:shots]


def test_items(root: Path, category: str) -> list[TestItem]:
    """All test images of ``category`` with their labels and mask paths.

    Args:
        root: Dataset root.
        category: Category folder name.

    Returns:
        Items sorted by defect type, then file name.

    Raises:
        FileNotFoundError: If ``test/`` does not exist.
        ValueError: If a defect image has no ``ground_truth/<type>/<stem>_mask.png``
            (the message names the image).
    """
    base = Path(root) / category
    test_dir = base / "test"
    if not test_dir.is_dir():
        msg = f"{test_dir} does not exist"
        raise FileNotFoundError(msg)
    items: list[TestItem] = []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        defect_type = type_dir.name
        for image in _sorted_images(type_dir):
            items.append(_test_item(base, defect_type, image))
    return items


test_items.__test__ = False  # type: ignore[attr-defined]  # keep pytest from collecting it


def load_mask(path: Path | None, size: tuple[int, int]) -> np.ndarray:
    """Load a ground-truth mask as ``bool``, resized with nearest-neighbour.

    Args:
        path: Mask PNG (any nonzero pixel is defect), or ``None`` for a good image.
        size: Target size as ``(width, height)``, PIL's convention.

    Returns:
        ``bool`` array of shape ``[height, width]``; all ``False`` when ``path`` is ``None``.
    """
    width, height = size
    if path is None:
        return np.zeros((height, width), dtype=bool)
    with Image.open(path) as image:
        gray = image.convert("L")
        if gray.size != (width, height):
            gray = gray.resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(gray) > 0


def _test_item(base: Path, defect_type: str, image: Path) -> TestItem:
    """Build the item for one test image, checking that a defect image has its mask."""
    if defect_type == GOOD:
        return TestItem(path=image, defect_type=GOOD, anomalous=False, mask_path=None)
    mask = base / "ground_truth" / defect_type / f"{image.stem}_mask.png"
    if not mask.is_file():
        msg = f"defect image {image} has no ground-truth mask (expected {mask})"
        raise ValueError(msg)
    return TestItem(path=image, defect_type=defect_type, anomalous=True, mask_path=mask)


def _sorted_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        msg = f"{folder} does not exist"
        raise FileNotFoundError(msg)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
