"""The few-shot reference pool: normal images per product, loaded from storage into the model."""

from __future__ import annotations

import io
import logging

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from inference.model.detector import FewShotDetector, ProductMemory
from storage import repositories

log = logging.getLogger(__name__)


def load_product(
    *, detector: FewShotDetector, session_factory: sessionmaker[Session], product: str
) -> ProductMemory | None:
    """(Re)load one product's active pool images into the detector.

    Returns:
        The product's memory, or None when the pool has no image for it.
    """
    with session_factory() as session:
        blobs = repositories.list_pool_images(session=session, product=product)
    if not blobs:
        return None
    images = [Image.open(io.BytesIO(blob)).convert("RGB") for blob in blobs]
    memory = detector.set_references(product, images, version=len(blobs))
    log.info(
        "pool loaded: product=%s references=%d threshold=%.4f (%s)",
        product, memory.references, memory.calibration.threshold, memory.calibration.method,
    )
    return memory


def load_all(*, detector: FewShotDetector, session_factory: sessionmaker[Session]) -> list[str]:
    """Load every product that has pool entries; returns the product names."""
    with session_factory() as session:
        products = repositories.pool_products(session=session)
    return [
        p for p in products
        if load_product(detector=detector, session_factory=session_factory, product=p)
    ]
