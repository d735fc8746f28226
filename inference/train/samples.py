"""Seeded training samples: a normal image, its reference, and (half the time) an anomaly.

Sample `i` is a pure function of (seed, i): training that resumes at step `s` draws exactly
the samples it would have drawn, whatever ran before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inference.model.positions import NO_ANOMALY

from .datasets import Conversation, DatasetError, Pool, Product, load_image
from .simulation import KINDS, SimulationError, answer_for_mask, simulate

__all__ = ["Sample", "SampleSource"]


@dataclass(frozen=True)
class Sample:
    """One training sample.

    Attributes:
        image: uint8 [S, S, 3] query image.
        reference: uint8 [S, S, 3] a normal image of the same product (the few-shot map).
        mask: bool [S, S] anomalous pixels (all False for a normal image).
        answer: The assistant's answer to the inspection question.
        product: Class name for the question.
        kind: "normal", a simulation kind, "real" (a real defect) or "dialogue".
        turns: For dialogue samples, the (question, answer) pairs; else empty.
        pool: Key of the few-shot pool the image belongs to (`SampleSource.pool`), or ""
            when the sample has only its one `reference`.
    """

    image: np.ndarray
    reference: np.ndarray
    mask: np.ndarray
    answer: str
    product: str
    kind: str
    turns: tuple[tuple[str, str], ...] = ()
    pool: str = ""


class SampleSource:
    """Draws samples from products, simulating anomalies on their normal images.

    Args:
        products: Where normal images (and real defects) come from; at least two products
            when the ``texture`` kind is used (its foreign texture is another product).
        seed: The stream's seed.
        size: Image side in pixels.
        anomaly_ratio: Fraction of samples with an anomaly.
        kinds: Simulation kinds drawn uniformly (`simulation.KINDS`).
        real_ratio: Of the anomalous samples of products with real defects, the fraction
            that use a real defect instead of a simulated one.
        conversations: PandaGPT-format dialogues for `dialogue`.
        shots: With pools: the pools' reference counts (pool `w` of product `p` has
            ``shots[(p + w) % len(shots)]``); empty = no pools, each sample has its own
            reference.
        pools_per_product: Pools per product. Each pool is one part: its references, and its
            normal and anomalous images are that part seen again (`datasets.Pool`), so that
            the few-shot map of a sample can be calibrated on its pool as the detector does.
    """

    def __init__(self, products: Sequence[Product], *, seed: int, size: int = 224,
                 anomaly_ratio: float = 0.5, kinds: Sequence[str] = KINDS,
                 real_ratio: float = 0.5,
                 conversations: Sequence[Conversation] = (),
                 shots: Sequence[int] = (), pools_per_product: int = 2) -> None:
        if not products:
            msg = "no products to train on"
            raise DatasetError(msg)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            msg = f"unknown or no anomaly kinds {unknown}; known: {', '.join(KINDS)}"
            raise ValueError(msg)
        if "texture" in kinds and len(products) < 2:
            msg = "the texture kind needs at least two products (a foreign texture)"
            raise ValueError(msg)
        self.products = list(products)
        self.seed = seed
        self.size = size
        self.anomaly_ratio = anomaly_ratio
        self.kinds = tuple(kinds)
        self.real_ratio = real_ratio
        self.conversations = list(conversations)
        if any(k < 1 for k in shots) or pools_per_product < 1:
            msg = f"shots {list(shots)} and pools_per_product {pools_per_product} must be >= 1"
            raise ValueError(msg)
        self.shots = tuple(shots)
        self.pools_per_product = pools_per_product
        self._pools: dict[str, Pool] = {}

    def pool(self, key: str) -> Pool:
        """The pool named `key` ("<product index>/<pool index>"), drawn once from the seed."""
        found = self._pools.get(key)
        if found is None:
            which, index = (int(part) for part in key.split("/"))
            rng = np.random.default_rng([self.seed, 7, which, index])
            shots = self.shots[(which + index) % len(self.shots)]
            found = self._pools[key] = self.products[which].pool(rng, shots, self.size)
        return found

    def sample(self, index: int) -> Sample:
        """Sample `index` of the stream (deterministic)."""
        rng = np.random.default_rng([self.seed, index])
        which = int(rng.integers(len(self.products)))
        product = self.products[which]
        key = ""
        if self.shots:
            key = f"{which}/{int(rng.integers(self.pools_per_product))}"
            pool = self.pool(key)
            image, reference = pool.normal(rng, self.size), pool.references[0]
        else:
            image, reference = product.normal_pair(rng, self.size)
        empty = np.zeros((self.size, self.size), bool)
        if rng.random() >= self.anomaly_ratio:
            return Sample(image.copy(), reference, empty, NO_ANOMALY, product.name, "normal",
                          pool=key)
        if product.defects and rng.random() < self.real_ratio:
            image, mask = product.defect(rng, self.size)
            return Sample(image.copy(), reference, mask, answer_for_mask(mask), product.name,
                          "real", pool=key)
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        donor = (self.pool(key).normal(rng, self.size) if key
                 else product.normal_pair(rng, self.size)[0])
        others = [p for i, p in enumerate(self.products) if i != which] or self.products
        foreign, _ = others[int(rng.integers(len(others)))].normal_pair(rng, self.size)
        try:
            drawn = simulate(kind, image, donor=donor, foreign=foreign, rng=rng)
        except SimulationError:  # e.g. a flat crop: keep it as a normal sample
            return Sample(image.copy(), reference, empty, NO_ANOMALY, product.name, "normal",
                          pool=key)
        return Sample(drawn.image, reference, drawn.mask, drawn.answer, product.name, kind,
                      pool=key)

    def dialogue(self, index: int) -> Sample:
        """Dialogue sample `index` (cycling through the conversations).

        Raises:
            ValueError: no conversations were given.
        """
        if not self.conversations:
            msg = "no conversations to draw dialogue samples from"
            raise ValueError(msg)
        rng = np.random.default_rng([self.seed, 1, index])
        item = self.conversations[int(rng.integers(len(self.conversations)))]
        image = load_image(item.image, self.size).copy()
        empty = np.zeros((self.size, self.size), bool)
        return Sample(image, image, empty, item.turns[0][1], item.product, "dialogue",
                      item.turns)
