"""Where training images come from: products, each a set of normal images (and real defects).

Loaders for the layouts users bring, each returning `Product`s:

* `mvtec_products`: MVTec-AD (``ROOT/<category>/train/good/*.png``); MVTec LOCO AD has the same
  training layout (`loco_products`).
* `visa_products`: VisA with its split CSV (``split_csv/1cls.csv``: object, split, label,
  image, mask; paths relative to ROOT): the normal training rows.
* `crackforest_products`: CrackForest (``image/*.jpg`` with ``groundTruth/*.mat``, crack = label
  2 of ``Segmentation``, or ``mask/*.png``): real cracks with their masks.
* `folder_products`: a custom product folder with ``good/`` (only that is needed), or a folder
  of such product folders.
* `wheel_products`: photos shipped inside the installed scikit-image wheel, as products whose
  normal images are random crops; the images the evaluation set is built from are excluded.
* `texture_products`: procedural stochastic textures (`textures.py`), products whose every
  normal image is a new realisation (their few-shot maps are raised everywhere, below the
  threshold, as a lawn's or a gravel bed's are).
* `load_conversations`: PandaGPT-format dialogue JSON (``[{"image_name", "conversation":
  [{"from": "human"|"gpt", "value"}]}]``), mixed into training to keep the dialogue ability.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from . import textures

__all__ = [
    "EVALUATION_SOURCES",
    "WHEEL_IMAGES",
    "Conversation",
    "DatasetError",
    "Pool",
    "Product",
    "crackforest_products",
    "folder_products",
    "load_conversations",
    "loco_products",
    "mvtec_products",
    "texture_products",
    "visa_products",
    "wheel_products",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".JPG", ".PNG")
# The images `agpt data synth` builds the evaluation set from (inference/evaluation/
# synthetic.py): never trained on, so the evaluation measures held-out products.
EVALUATION_SOURCES = frozenset({"skimage:brick", "skimage:grass", "skimage:gravel",
                                "conformal_clip_data:textile"})
# scikit-image photos stored in its wheel (no download), as skimage.data names them.
WHEEL_IMAGES = ("astronaut", "camera", "cell", "chelsea", "coffee", "coins", "hubble_deep_field",
                "ihc", "moon", "motorcycle_left", "page", "retina", "rocket",
                "text", "horse")
_WHEEL_FILES = {"ihc": "ihc.png", "hubble_deep_field": "hubble_deep_field.jpg",
                "retina": "retina.jpg", "rocket": "rocket.jpg"}


_WINDOW_TRIES = 20
_FLAT_STD = 12.0  # grey levels: a window flatter than this shows no part


class DatasetError(ValueError):
    """A data root does not have the expected layout."""


@dataclass(frozen=True)
class Product:
    """The normal images of one product (and any real defects with masks).

    Attributes:
        name: Class name used in the inspection question.
        images: Normal image files, or ``skimage:<name>`` wheel images.
        crop: Normal images are random crops of `images` (large photos) instead of whole files.
        defects: (image, mask) files of real defects.
    """

    name: str
    images: tuple[str, ...]
    crop: bool = False
    defects: tuple[tuple[str, str], ...] = ()

    def normal_pair(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Two normal images of the product (query, reference), uint8 [size, size, 3].

        Cropped products take the reference from the same place (shifted by up to 4 % of
        the crop, maybe mirrored), as a reference photo of the same part would be; file
        products take two different files when there are two.
        """
        if not self.images:
            msg = f"product {self.name!r} has no normal images"
            raise DatasetError(msg)
        source = self.images[int(rng.integers(len(self.images)))]
        if not self.crop:
            other = self.images[int(rng.integers(len(self.images)))]
            if len(self.images) > 1:
                while other == source:
                    other = self.images[int(rng.integers(len(self.images)))]
            return load_image(source, size), load_image(other, size)
        full = load_image(source, None)
        height, width = full.shape[:2]
        side = int(rng.uniform(0.25, 0.6) * min(height, width))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        shift = int(0.04 * side)
        r_top = int(np.clip(top + rng.integers(-shift, shift + 1), 0, height - side))
        r_left = int(np.clip(left + rng.integers(-shift, shift + 1), 0, width - side))
        query = full[top : top + side, left : left + side]
        reference = full[r_top : r_top + side, r_left : r_left + side]
        if rng.random() < 0.5:
            reference = reference[:, ::-1]
        return _resize(query, size), _resize(reference, size)

    def pool(self, rng: np.random.Generator, shots: int, size: int) -> Pool:
        """A few-shot pool of the product: `shots` normal references and how to draw more.

        Cropped products: a window of the photo (a quarter to 0.6 of its short side) is the
        part; its references are that window seen by a camera displaced by up to 4 % of the
        window. File products: `shots` files are the references, the others the normals
        (all files when there are no others).
        """
        if not self.images:
            msg = f"product {self.name!r} has no normal images"
            raise DatasetError(msg)
        if not self.crop:
            order = rng.permutation(len(self.images))
            chosen = tuple(self.images[int(i)] for i in order[:shots])
            rest = tuple(self.images[int(i)] for i in order[shots:]) or self.images
            references = tuple(load_image(path, size) for path in chosen)
            return Pool(self, references, rest, None)
        for _ in range(_WINDOW_TRIES):  # a flat window (sky, background) is no part
            source = self.images[int(rng.integers(len(self.images)))]
            full = load_image(source, None)
            height, width = full.shape[:2]
            side = int(rng.uniform(0.25, 0.6) * min(height, width))
            window = (source, int(rng.integers(0, height - side + 1)),
                      int(rng.integers(0, width - side + 1)), side)
            _, top, left, _ = window
            if full[top : top + side, left : left + side].std() >= _FLAT_STD:
                break
        references = tuple(_window_view(full, window, rng, size, shift=0.04, angle=0.0)
                           for _ in range(shots))
        return Pool(self, references, (), window)

    def defect(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """A real defect image and its bool mask at [size, size]."""
        image, mask = self.defects[int(rng.integers(len(self.defects)))]
        return load_image(image, size), load_mask(mask, size)


@dataclass(frozen=True)
class Pool:
    """A product's few-shot pool for training: references and further normals of the part.

    Attributes:
        product: The product.
        references: uint8 [S, S, 3] normal references (read-only).
        normals: File products: files of further normal parts.
        window: Cropped products: (source, top, left, side) of the part in its photo.
    """

    product: Product
    references: tuple[np.ndarray, ...]
    normals: tuple[str, ...]
    window: tuple[str, int, int, int] | None

    def normal(self, rng: np.random.Generator, size: int, *, turn: float = 0.3) -> np.ndarray:
        """Another normal part (a copy): a further file, or the window seen again.

        The window is seen again displaced by up to 10 % of its side, in another pose with
        probability `turn` (parts lie in any pose; the few-shot detector's rotated reference
        views cover that) or else turned by at most 5 degrees, with ±5 % brightness.
        """
        if self.window is None:
            return load_image(self.normals[int(rng.integers(len(self.normals)))], size).copy()
        full = load_image(self.window[0], None)
        angle = rng.uniform(-180, 180) if rng.random() < turn else rng.uniform(-5, 5)
        view = _window_view(full, self.window, rng, size, shift=0.1, angle=angle)
        gain = rng.uniform(0.95, 1.05)
        return np.clip(view.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _window_view(full: np.ndarray, window: tuple[str, int, int, int], rng: np.random.Generator,
                 size: int, *, shift: float, angle: float) -> np.ndarray:
    """The window of a photo displaced by up to `shift` of its side and turned by `angle`."""
    _, top, left, side = window
    reach = int(shift * side)
    dy, dx = (int(v) for v in rng.integers(-reach, reach + 1, 2)) if reach else (0, 0)
    centre = (left + dx + side / 2.0, top + dy + side / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, float(angle), 1.0)
    matrix[:, 2] -= (centre[0] - side / 2.0, centre[1] - side / 2.0)  # window → (0, 0)
    view = cv2.warpAffine(np.ascontiguousarray(full), matrix, (side, side),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return _resize(view, size)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(np.ascontiguousarray(image), (size, size),
                                           interpolation=interpolation))


@lru_cache(maxsize=512)
def load_image(source: str, size: int | None) -> np.ndarray:
    """The uint8 RGB [H, W, 3] pixels of a file or ``skimage:<name>`` (size×size if given).

    Cached: the same file is decoded once per size (read-only arrays; copy before drawing).
    ``procedural:<family>:<index>`` names a procedural texture (`textures.render`).
    """
    if source.startswith(textures.PREFIX):
        image = textures.render(source)
        if size is not None:
            image = _resize(image, size)
        image.setflags(write=False)
        return image
    if source.startswith("skimage:"):
        name = source.removeprefix("skimage:")
        import skimage.data

        folder = Path(skimage.data.__file__).parent
        path = folder / _WHEEL_FILES.get(name, f"{name}.png")
    else:
        path = Path(source)
    with Image.open(path) as opened:
        image = np.asarray(opened.convert("RGB"))
    if size is not None:
        image = _resize(image, size)
    image.setflags(write=False)
    return image


def load_mask(source: str, size: int) -> np.ndarray:
    """The bool [size, size] mask from a PNG (non-zero = defect) or a CrackForest ``.mat``."""
    path = Path(source)
    if path.suffix == ".mat":
        from scipy.io import loadmat

        truth = loadmat(path)["groundTruth"]
        segmentation = np.asarray(truth[0, 0]["Segmentation"])
        mask = segmentation > 1
    else:
        with Image.open(path) as opened:
            mask = np.asarray(opened.convert("L")) > 0
    resized = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return resized.astype(bool)


def _images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        msg = f"{path} not found: {what}"
        raise DatasetError(msg)
    return path


def mvtec_products(root: Path, categories: Sequence[str] | None = None) -> list[Product]:
    """MVTec-AD (or MVTec LOCO AD) categories: the normal images of ``train/good``.

    Raises:
        DatasetError: no category with ``train/good`` under `root`, or a named one missing.
    """
    root = Path(root)
    names = list(categories) if categories else sorted(
        p.name for p in root.iterdir() if (p / "train" / "good").is_dir())
    products = []
    for name in names:
        good = _need(root / name / "train" / "good", "an MVTec-layout category needs train/good")
        products.append(Product(name.replace("_", " "), tuple(_images(good))))
    if not products:
        msg = f"no MVTec-layout category (<category>/train/good) under {root}"
        raise DatasetError(msg)
    return products


loco_products = mvtec_products  # MVTec LOCO AD: the same train/good layout


def visa_products(root: Path, split_csv: Path | None = None) -> list[Product]:
    """VisA: the rows of the split CSV with split ``train`` and label ``normal``.

    Raises:
        DatasetError: the CSV is missing or has none of those rows.
    """
    root = Path(root)
    csv_path = _need(Path(split_csv) if split_csv else root / "split_csv" / "1cls.csv",
                     "VisA needs its split CSV (split_csv/1cls.csv)")
    by_object: dict[str, list[str]] = {}
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("split") == "train" and row.get("label") == "normal":
                by_object.setdefault(row["object"], []).append(str(root / row["image"]))
    if not by_object:
        msg = f"{csv_path}: no train/normal rows"
        raise DatasetError(msg)
    return [Product(name, tuple(paths)) for name, paths in sorted(by_object.items())]


def crackforest_products(root: Path, name: str = "road surface") -> list[Product]:
    """CrackForest: every image is a defect (a crack) with its mask.

    The images double as the product's normal references (their crack covers a few per cent).

    Raises:
        DatasetError: without ``image/`` or without a mask for an image.
    """
    root = Path(root)
    images = _images(_need(root / "image", "CrackForest needs image/ and groundTruth/"))
    defects = []
    for image in images:
        stem = Path(image).stem
        candidates = [root / "groundTruth" / f"{stem}.mat", root / "mask" / f"{stem}.png"]
        mask = next((p for p in candidates if p.is_file()), None)
        if mask is None:
            msg = f"no groundTruth/{stem}.mat or mask/{stem}.png for {image}"
            raise DatasetError(msg)
        defects.append((image, str(mask)))
    return [Product(name, tuple(images), defects=tuple(defects))]


def folder_products(root: Path) -> list[Product]:
    """A product folder with ``good/`` (its name is the class name), or a folder of them.

    Raises:
        DatasetError: no ``good/`` with images.
    """
    root = Path(root)
    folders = [root] if (root / "good").is_dir() else sorted(
        p for p in root.iterdir() if (p / "good").is_dir())
    products = [Product(f.name.replace("_", " "), tuple(_images(f / "good"))) for f in folders]
    products = [p for p in products if p.images]
    if not products:
        msg = f"{root}: no good/ folder with images"
        raise DatasetError(msg)
    return products


def wheel_products(names: Sequence[str] = WHEEL_IMAGES) -> list[Product]:
    """scikit-image's photos as products whose normal images are crops.

    Raises:
        DatasetError: a name is one of the evaluation set's sources or not a wheel photo.
    """
    products = []
    for name in names:
        if f"skimage:{name}" in EVALUATION_SOURCES:
            msg = f"skimage:{name} is a source of the evaluation set: never train on it"
            raise DatasetError(msg)
        if name not in WHEEL_IMAGES:
            msg = f"unknown wheel image {name!r}; known: {', '.join(WHEEL_IMAGES)}"
            raise DatasetError(msg)
        products.append(Product(name.replace("_", " "), (f"skimage:{name}",), crop=True))
    return products


def texture_products(families: Sequence[str] = tuple(textures.FAMILIES)) -> list[Product]:
    """Procedural stochastic textures as file products (`textures.texture_sources`).

    A pool's references are some realisations of a family, its normal images the others.

    Raises:
        DatasetError: an unknown family.
    """
    try:
        sources = textures.texture_sources(families)
    except ValueError as err:
        raise DatasetError(str(err)) from err
    return [Product(f"{family} texture", images) for family, images in sources.items()]


@dataclass(frozen=True)
class Conversation:
    """One PandaGPT-format dialogue about one image."""

    image: str
    turns: tuple[tuple[str, str], ...]  # (human, gpt) pairs
    product: str = field(default="object")


def load_conversations(json_path: Path, image_root: Path) -> list[Conversation]:
    """PandaGPT instruction data: dialogues whose turns alternate human / gpt.

    Raises:
        DatasetError: the file is not such a list, or an image is missing.
    """
    try:
        items = json.loads(Path(json_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        msg = f"{json_path}: not a readable JSON file ({err})"
        raise DatasetError(msg) from err
    if not isinstance(items, list):
        msg = f"{json_path}: expected a list of {{image_name, conversation}}"
        raise DatasetError(msg)
    dialogues = []
    for index, item in enumerate(items):
        turns = item.get("conversation") if isinstance(item, dict) else None
        name = item.get("image_name") if isinstance(item, dict) else None
        if not isinstance(turns, list) or not isinstance(name, str) or len(turns) < 2:
            msg = f"{json_path}: item {index} lacks image_name or a conversation"
            raise DatasetError(msg)
        image = Path(image_root) / name
        if not image.is_file():
            msg = f"{json_path}: item {index}: image {image} not found"
            raise DatasetError(msg)
        pairs = []
        for human, gpt in zip(turns[0::2], turns[1::2], strict=False):
            if human.get("from") != "human" or gpt.get("from") != "gpt":
                msg = f"{json_path}: item {index}: turns must alternate human / gpt"
                raise DatasetError(msg)
            question = str(human["value"]).replace("<Img>", "").replace("</Img>", "")
            question = question.replace("<image>", "").strip()
            pairs.append((question, str(gpt["value"]).strip()))
        dialogues.append(Conversation(str(image), tuple(pairs)))
    return dialogues
