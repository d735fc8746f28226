"""A small MVTec-layout test set: real texture photos with drawn defects.

The base images are real photographs shipped inside installed wheels, so the set can be
regenerated offline and byte-for-byte from a seed:

* ``brick``, ``grass``, ``gravel``: crops of ``skimage.data.brick()`` / ``grass()`` /
  ``gravel()`` (512x512 grey photos, made RGB): 208-px crops at distinct offsets of a 16-px
  grid, randomly flipped, resized to ``size``. Reference (train) crops come from the top
  208 rows, test crops from the rows below, so no test image shares a pixel with a
  reference (a patch memory cannot just find the same pixels again).
* ``textile``: distinct files of the *nominal* textile images of ``conformal_clip_data``.
* ``bracket``, ``gear``: drawn metal parts in random pose with their own defect kinds
  (missing piece, crack, extra material, dent; see ``objects.py``).

Defects are drawn by ``defects.py`` (kinds, sizes and the rules that keep them visible are
described there), kinds round robin; the mask marks the pixels that changed.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from inference.evaluation.defects import DEFECT_KINDS, DefectSample, draw_defect
from inference.evaluation.objects import OBJECT_CATEGORIES, OBJECT_DEFECT_KINDS, draw_object

GENERATOR_VERSION = "2"
TEXTURE_CATEGORIES: tuple[str, ...] = ("brick", "grass", "gravel", "textile")
DEFAULT_CATEGORIES: tuple[str, ...] = TEXTURE_CATEGORIES + OBJECT_CATEGORIES
# Test split of `agpt data synth`: enough normal images that a false-alarm rate of a few
# per cent is measured, not guessed (one false alarm in 10 is already 10 %).
DEFAULT_COUNTS = {"n_train": 8, "n_test_good": 60, "n_test_defect": 36}


def defect_kinds(category: str) -> tuple[str, ...]:
    """The defect kinds drawn on ``category``."""
    return OBJECT_DEFECT_KINDS if category in OBJECT_CATEGORIES else DEFECT_KINDS

_SKIMAGE_TEXTURES = ("brick", "grass", "gravel")
_CROP = 208  # side of the crops of the 512x512 skimage photos; rows [0, _CROP) train only
_GRID_STEP = 16  # crop offsets lie on this grid, so no two images of a split share one



@dataclass(frozen=True)
class CategorySamples:
    """All images of one category, before anything is written.

    Attributes:
        category: Category name.
        train: Normal reference images, ``uint8 [H, W, 3]`` each.
        good: Normal test images.
        defects: Defect test images, kinds in round-robin order of ``DEFECT_KINDS``.
        train_sources: Source description per train image.
        good_sources: Source description per good test image.
    """

    category: str
    train: list[np.ndarray]
    good: list[np.ndarray]
    defects: list[DefectSample]
    train_sources: list[str]
    good_sources: list[str]


@dataclass(frozen=True)
class _Base:
    image: np.ndarray  # uint8 [size, size, 3]
    source: str


def render_category(
    category: str,
    *,
    n_train: int = 4,
    n_test_good: int = 10,
    n_test_defect: int = 12,
    size: int = 224,
    seed: int = 0,
) -> CategorySamples:
    """Generate one category in memory (what ``build_textures_set`` writes).

    Args:
        category: One of ``DEFAULT_CATEGORIES``.
        n_train: Normal training (reference) images.
        n_test_good: Normal test images.
        n_test_defect: Defect test images, spread round robin over ``DEFECT_KINDS``.
        size: Side of the square output images in pixels.
        seed: Non-negative seed; each category derives its own stream from it.

    Returns:
        The images, clean originals, masks and parameters.

    Raises:
        ValueError: For an unknown category or more images than distinct sources.
    """
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
    if category in OBJECT_CATEGORIES:
        return _object_category(category, n_train, n_test_good, n_test_defect, size, rng)
    kinds = [DEFECT_KINDS[i % len(DEFECT_KINDS)] for i in range(n_test_defect)]
    n_donors = kinds.count("cutpaste")
    n_test = n_test_good + n_test_defect + n_donors
    train, test = _base_images(category, n_train, n_test, size, rng)
    good = test[:n_test_good]
    to_damage = test[n_test_good : n_test_good + n_test_defect]
    donors = iter(test[n_test_good + n_test_defect :])
    defects = []
    for index, (kind, base) in enumerate(zip(kinds, to_damage, strict=True)):
        donor = next(donors).image if kind == "cutpaste" else base.image
        occurrence = index // len(DEFECT_KINDS)
        defects.append(draw_defect(kind, base.image, source=base.source, donor=donor,
                                   rng=rng, occurrence=occurrence))
    return CategorySamples(
        category=category,
        train=[b.image for b in train],
        good=[b.image for b in good],
        defects=defects,
        train_sources=[b.source for b in train],
        good_sources=[b.source for b in good],
    )


def _object_category(category: str, n_train: int, n_test_good: int, n_test_defect: int,
                     size: int, rng: np.random.Generator) -> CategorySamples:
    """Drawn parts in random pose (``objects.py``), defect kinds round robin."""
    def source(params: dict[str, Any]) -> str:
        pose = params["pose"]
        return f"drawn {category}, angle {pose['angle']:.1f} deg, noise seed {pose['seed']:.0f}"

    def normals(count: int) -> tuple[list[np.ndarray], list[str]]:
        drawn = [draw_object(category, rng, size=size) for _ in range(count)]
        return [d[0] for d in drawn], [source(d[3]) for d in drawn]

    train, train_sources = normals(n_train)
    good, good_sources = normals(n_test_good)
    defects = []
    for index in range(n_test_defect):
        kind = OBJECT_DEFECT_KINDS[index % len(OBJECT_DEFECT_KINDS)]
        image, clean, mask, params = draw_object(category, rng, size=size, kind=kind)
        assert mask is not None
        defects.append(DefectSample(kind, image, clean, mask, source(params), params))
    return CategorySamples(category, train, good, defects, train_sources, good_sources)


def build_textures_set(
    root: Path,
    *,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    n_train: int = DEFAULT_COUNTS["n_train"],
    n_test_good: int = DEFAULT_COUNTS["n_test_good"],
    n_test_defect: int = DEFAULT_COUNTS["n_test_defect"],
    size: int = 224,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write an MVTec-AD-layout test set of real textures with drawn defects.

    Files: ``<root>/<cat>/train/good/NNN.png``, ``<root>/<cat>/test/good/NNN.png``,
    ``<root>/<cat>/test/<kind>/NNN.png`` and ``<root>/<cat>/ground_truth/<kind>/NNN_mask.png``
    (255 on the defect, 0 elsewhere), plus ``manifest.json`` (version, seed, sources and
    every defect's parameters) and ``README.txt``. Same arguments give identical bytes.

    Args:
        root: Output directory (created).
        categories: Which of ``DEFAULT_CATEGORIES`` to build.
        n_train: Normal training images per category.
        n_test_good: Normal test images per category.
        n_test_defect: Defect test images per category (round robin over kinds).
        size: Image side in pixels.
        seed: Non-negative seed.
        overwrite: Replace existing category folders instead of refusing.

    Returns:
        ``root``.

    Raises:
        FileExistsError: If a category folder exists, is not empty and ``overwrite`` is off.
        ValueError: For an unknown category.
    """
    root = Path(root)
    unknown = sorted(set(categories) - set(DEFAULT_CATEGORIES))
    if unknown:  # checked before anything is written
        msg = f"unknown categories {unknown}; choose from {DEFAULT_CATEGORIES}"
        raise ValueError(msg)
    for category in categories:
        _prepare_dir(root / category, overwrite=overwrite)
    manifest: dict[str, Any] = {
        "generator": "inference.evaluation.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "counts": {"train": n_train, "test_good": n_test_good, "test_defect": n_test_defect},
        "defect_kinds": {c: list(defect_kinds(c)) for c in categories},
        "sources": _source_versions(),
        "categories": {},
    }
    for category in categories:
        samples = render_category(
            category,
            n_train=n_train,
            n_test_good=n_test_good,
            n_test_defect=n_test_defect,
            size=size,
            seed=seed,
        )
        manifest["categories"][category] = _write_category(root / category, samples)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (root / "README.txt").write_text(_readme(seed, size, categories))
    return root


# ---------------------------------------------------------------- base images


def _base_images(
    category: str, n_train: int, n_test: int, size: int, rng: np.random.Generator
) -> tuple[list[_Base], list[_Base]]:
    """Distinct clean images of ``category``: ``n_train`` references and ``n_test`` others."""
    if category in _SKIMAGE_TEXTURES:
        from skimage import data  # imported here: loading skimage.data costs ~0.5 s

        photo = getattr(data, category)()  # [512, 512] uint8
        train = _texture_crops(photo, category, (0, _CROP), n_train, size, rng)
        test = _texture_crops(photo, category, (_CROP, photo.shape[0]), n_test, size, rng)
        return train, test
    if category == "textile":
        bases = _textile_images(n_train + n_test, size, rng)
        return bases[:n_train], bases[n_train:]
    msg = f"unknown category {category!r}; choose from {DEFAULT_CATEGORIES}"
    raise ValueError(msg)


def _texture_crops(
    photo: np.ndarray,
    name: str,
    rows: tuple[int, int],
    count: int,
    size: int,
    rng: np.random.Generator,
) -> list[_Base]:
    """Crops from the band ``rows`` of ``photo`` at distinct grid offsets, randomly flipped."""
    ys = range(rows[0], rows[1] - _CROP + 1, _GRID_STEP)
    xs = range(0, photo.shape[1] - _CROP + 1, _GRID_STEP)
    if count > len(ys) * len(xs):
        msg = f"{name}: {count} crops requested from rows {rows}, only {len(ys) * len(xs)} exist"
        raise ValueError(msg)
    picks = rng.choice(len(ys) * len(xs), size=count, replace=False)
    flips = rng.integers(0, 4, size=count)
    bases = []
    for pick, flip in zip(picks, flips, strict=True):
        y, x = ys[int(pick) // len(xs)], xs[int(pick) % len(xs)]
        crop = photo[y : y + _CROP, x : x + _CROP]
        crop = crop[:, ::-1] if flip & 1 else crop
        crop = crop[::-1] if flip & 2 else crop
        rgb = np.repeat(crop[:, :, None], 3, axis=2)
        source = f"skimage.data.{name}() crop y={y} x={x} {_CROP}px flip={int(flip)}"
        bases.append(_Base(_resize(rgb, size), source))
    return bases


def _textile_images(count: int, size: int, rng: np.random.Generator) -> list[_Base]:
    """Distinct nominal textile photos of the conformal_clip_data wheel."""
    import conformal_clip_data

    folder = Path(conformal_clip_data.nominal_dir())
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    if count > len(files):
        msg = f"textile: {count} images requested, only {len(files)} nominal files"
        raise ValueError(msg)
    bases = []
    for index in rng.choice(len(files), size=count, replace=False):
        path = files[int(index)]
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        bases.append(_Base(_resize(rgb, size), f"conformal_clip_data nominal/{path.name}"))
    return bases


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square-resize with area averaging when shrinking, bicubic when growing."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    shrink = image.shape[0] > size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interpolation)




# ---------------------------------------------------------------- writing


def _prepare_dir(folder: Path, *, overwrite: bool) -> None:
    """Refuse (or with ``overwrite`` clear) a non-empty category folder."""
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            msg = f"{folder} exists and is not empty; pass overwrite=True to replace it"
            raise FileExistsError(msg)
        shutil.rmtree(folder)


def _write_category(folder: Path, samples: CategorySamples) -> dict[str, Any]:
    """Write one category's PNGs; return its manifest entry."""
    train = []
    for index, (image, source) in enumerate(zip(samples.train, samples.train_sources, strict=True)):
        train.append(
            {"file": _save(folder, f"train/good/{index:03d}.png", image), "source": source}
        )
    test = []
    for index, (image, source) in enumerate(zip(samples.good, samples.good_sources, strict=True)):
        test.append({"file": _save(folder, f"test/good/{index:03d}.png", image), "source": source})
    per_kind: dict[str, int] = {}
    for defect in samples.defects:
        number = per_kind.get(defect.kind, 0)
        per_kind[defect.kind] = number + 1
        stem = f"{number:03d}"
        mask = defect.mask.astype(np.uint8) * 255
        test.append(
            {
                "file": _save(folder, f"test/{defect.kind}/{stem}.png", defect.image),
                "mask": _save(folder, f"ground_truth/{defect.kind}/{stem}_mask.png", mask),
                "source": defect.source,
                "params": defect.params,
            }
        )
    return {"train": train, "test": test}


def _save(folder: Path, relative: str, array: np.ndarray) -> str:
    """Save ``array`` as PNG under ``folder``; return the path relative to the dataset root."""
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return f"{folder.name}/{relative}"


def _source_versions() -> dict[str, str]:
    """Versions of the wheels whose photos are used."""
    from importlib.metadata import version

    return {
        "scikit-image": version("scikit-image"),
        "conformal-clip-data": version("conformal-clip-data"),
        "opencv": cv2.__version__,
    }


def _readme(seed: int, size: int, categories: Sequence[str]) -> str:
    """Human-readable description written next to the images."""
    return (
        "Synthetic MVTec-AD-layout test set (agpt inference.evaluation.synthetic, "
        f"generator version {GENERATOR_VERSION}).\n"
        f"seed={seed} size={size} categories={', '.join(categories)}\n"
        "Base images are real photos: skimage.data brick/grass/gravel crops and the nominal\n"
        "textile images of conformal_clip_data. Defects (scratch, crack, stain, hole, color,\n"
        "cutpaste) are drawn; masks mark the changed pixels. bracket and gear are drawn parts\n"
        "in random pose (missing, crack, extra, dent). manifest.json lists each image's\n"
        "source and defect parameters. Regenerate with build_textures_set(root, seed=...).\n"
    )
