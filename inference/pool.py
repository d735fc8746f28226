"""The few-shot reference pool: normal images per product, loaded from storage into the model.

Changing a pool (:func:`add_references`, :func:`remove_reference`) commits the change, then
announces it on the pool topic, so every worker reloads the product before its next batch
(:mod:`inference.pool_updates`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from PIL import Image, UnidentifiedImageError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from inference.model.interface import Detector, ReferenceState
from ingest.pool_events import publish_pool_change
from ingest.transport.base import Producer
from storage import repositories
from storage.errors import PoolEntryNotFoundError
from storage.models import PoolEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolChange:
    """A committed change of one product's pool.

    Attributes:
        product: The product.
        entry_ids: Entries added or removed.
        version: The pool's version after the change.
        references: Active entries after the change.
    """

    product: str
    entry_ids: tuple[int, ...]
    version: int
    references: int


@dataclass(frozen=True)
class PoolEntryInfo:
    """One pool entry without its image."""

    id: int
    product: str
    source: str
    added_by: str
    added_at: datetime
    active: bool


def pool_version(*, session: Session, product: str) -> int:
    """A number that increases with every change of ``product``'s pool (0: never had one).

    The highest entry id of the product (ids only grow, so every addition raises it) plus
    its number of deactivated entries (every removal raises that): no extra column, and
    two workers reading the same pool agree on it.
    """
    newest = session.scalar(select(func.max(PoolEntry.id)).where(PoolEntry.product == product))
    removed = session.scalar(
        select(func.count()).select_from(PoolEntry)
        .where(PoolEntry.product == product, PoolEntry.active.is_(False))
    )
    return int(newest or 0) + int(removed or 0)


def list_entries(*, session: Session, product: str,
                 include_inactive: bool = False) -> list[PoolEntryInfo]:
    """The product's pool entries (active ones unless told otherwise), oldest first."""
    query = (
        select(PoolEntry.id, PoolEntry.product, PoolEntry.source, PoolEntry.added_by,
               PoolEntry.added_at, PoolEntry.active)
        .where(PoolEntry.product == product)
        .order_by(PoolEntry.added_at, PoolEntry.id)
    )
    if not include_inactive:
        query = query.where(PoolEntry.active.is_(True))
    return [PoolEntryInfo(*row) for row in session.execute(query)]


def as_png(data: bytes) -> bytes:
    """Re-encode an image file's bytes as an RGB PNG (the pool's storage format).

    Raises:
        ValueError: The bytes are not an image PIL can read.
    """
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        msg = f"not a readable image ({type(exc).__name__})"
        raise ValueError(msg) from exc
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def add_references(
    *,
    session_factory: sessionmaker[Session],
    product: str,
    images: Sequence[bytes],
    added_by: str,
    source: str = "cli",
    producer: Producer | None = None,
    topic: str = "agpt.pool",
) -> PoolChange:
    """Add normal reference images to a product's pool, commit, then announce the change.

    Args:
        session_factory: Database sessions.
        product: Product the references belong to.
        images: Encoded images (any format PIL reads; stored as PNG).
        added_by: Who adds them.
        source: Where they come from (``"cli"``, ``"review"``...).
        producer: Publishes the change on ``topic``; None only writes the database
            (one process: the in-process worker is told by other means or on restart).
        topic: The pool topic.

    Returns:
        The committed change.

    Raises:
        ValueError: An image is unreadable (nothing is written).
        TransportError: The change is committed but its announcement was not acknowledged.
    """
    pngs = [as_png(data) for data in images]
    with session_factory.begin() as session:
        ids = tuple(
            repositories.add_pool_entry(session=session, product=product, image_png=png,
                                        source=source, added_by=added_by)
            for png in pngs
        )
        change = PoolChange(product, ids, pool_version(session=session, product=product),
                            len(list_entries(session=session, product=product)))
    _announce(change, producer, topic)
    return change


def remove_reference(
    *,
    session_factory: sessionmaker[Session],
    entry_id: int,
    actor: str,
    producer: Producer | None = None,
    topic: str = "agpt.pool",
) -> PoolChange:
    """Take one entry out of its pool (the row is kept for the audit), commit, announce.

    Raises:
        PoolEntryNotFoundError: No such entry.
        TransportError: The change is committed but its announcement was not acknowledged.
    """
    with session_factory.begin() as session:
        entry = session.get(PoolEntry, entry_id)
        if entry is None:
            raise PoolEntryNotFoundError(entry_id)
        product = entry.product
        repositories.deactivate_pool_entry(session=session, entry_id=entry_id, actor=actor)
        change = PoolChange(product, (entry_id,), pool_version(session=session, product=product),
                            len(list_entries(session=session, product=product)))
    _announce(change, producer, topic)
    return change


def _announce(change: PoolChange, producer: Producer | None, topic: str) -> None:
    if producer is None:
        return
    publish_pool_change(producer=producer, topic=topic, product=change.product,
                        version=change.version)


def load_product(
    *, detector: Detector, session_factory: sessionmaker[Session], product: str
) -> ReferenceState | None:
    """(Re)load one product's active pool images into the detector.

    Returns:
        The product's memory (its ``version`` is :func:`pool_version`), or None when the
        pool has no image for it.
    """
    with session_factory() as session:
        # Version first: a change committed between the two reads then leaves the memory
        # looking older than it is (one extra reload later), never newer (a missed one).
        version = pool_version(session=session, product=product)
        blobs = repositories.list_pool_images(session=session, product=product)
    if not blobs:
        return None
    images = [Image.open(io.BytesIO(blob)).convert("RGB") for blob in blobs]
    memory = detector.set_references(product, images, version=version)
    log.info(
        "pool loaded: product=%s references=%d threshold=%.4f (%s)",
        product, memory.references, memory.calibration.threshold, memory.calibration.method,
    )
    return memory


def load_all(*, detector: Detector, session_factory: sessionmaker[Session]) -> list[str]:
    """Load every product that has pool entries; returns the product names."""
    with session_factory() as session:
        products = repositories.pool_products(session=session)
    return [
        p for p in products
        if load_product(detector=detector, session_factory=session_factory, product=p)
    ]
