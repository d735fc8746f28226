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

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from inference.model.interface import Detector, ReferenceState
from ingest.pool_events import publish_pool_change
from ingest.topics import POOL_TOPIC
from ingest.transport.base import Producer
from storage import repositories
from storage.pool import to_png

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


class UnreadablePoolImageError(ValueError):
    """An image given to the pool cannot be read; ``index`` is its position in the input."""

    def __init__(self, index: int, reason: str) -> None:
        """Name the image by its position."""
        super().__init__(f"image {index}: {reason}")
        self.index = index
        self.reason = reason


def add_references(
    *,
    session_factory: sessionmaker[Session],
    product: str,
    images: Sequence[bytes],
    added_by: str,
    source: str = "cli",
    producer: Producer | None = None,
    topic: str = POOL_TOPIC,
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
        UnreadablePoolImageError: An image is unreadable (nothing is written).
        TransportError: The change is committed but its announcement was not acknowledged.
    """
    pngs = []
    for index, data in enumerate(images):  # each image is decoded and encoded once
        try:
            pngs.append(to_png(data))
        except ValueError as exc:
            raise UnreadablePoolImageError(index, str(exc)) from exc
    with session_factory.begin() as session:
        ids = tuple(
            repositories.add_pool_entry(session=session, product=product, image_png=png,
                                        source=source, added_by=added_by)
            for png in pngs
        )
        change = _committed_change(session, product, ids)
    _announce(session_factory, producer, topic)
    return change


def remove_reference(
    *,
    session_factory: sessionmaker[Session],
    entry_id: int,
    actor: str,
    producer: Producer | None = None,
    topic: str = POOL_TOPIC,
) -> PoolChange:
    """Take one entry out of its pool (the row is kept for the audit), commit, announce.

    Raises:
        PoolEntryNotFoundError: No such entry.
        TransportError: The change is committed but its announcement was not acknowledged.
    """
    with session_factory.begin() as session:
        product = repositories.get_pool_entry(session=session, entry_id=entry_id).product
        repositories.deactivate_pool_entry(session=session, entry_id=entry_id, actor=actor)
        change = _committed_change(session, product, (entry_id,))
    _announce(session_factory, producer, topic)
    return change


def _committed_change(session: Session, product: str, entry_ids: tuple[int, ...]) -> PoolChange:
    return PoolChange(product, entry_ids,
                      repositories.pool_version(session=session, product=product),
                      len(repositories.list_pool_entries(session=session, product=product)))


def _announce(session_factory: sessionmaker[Session], producer: Producer | None,
              topic: str) -> None:
    if producer is not None:
        announce_pending(session_factory=session_factory, producer=producer, topic=topic)


def announce_pending(*, session_factory: sessionmaker[Session], producer: Producer,
                     topic: str = POOL_TOPIC) -> dict[str, int]:
    """Publish every committed pool change not yet announced (the outbox), then mark them.

    Whoever commits a pool change (``agpt pool add``, the dashboard) leaves a
    ``pool_changes`` row with ``announced_at`` unset; this publishes one event per changed
    product with its newest version (workers reload a product once, whatever the number of
    changes) and marks the rows announced only after the broker acknowledged. Two
    publishers running at once announce some changes twice, which workers ignore (they
    reload only for a version newer than theirs).

    Returns:
        The announced products with the version published for each.

    Raises:
        TransportError: The broker did not acknowledge (the rows stay unannounced).
    """
    with session_factory() as session:
        pending = repositories.unannounced_pool_changes(session=session)
        # The product's current version: covers changes committed after the read too.
        newest = {change.product: repositories.pool_version(session=session,
                                                            product=change.product)
                  for change in pending}
    for product, version in sorted(newest.items()):
        publish_pool_change(producer=producer, topic=topic, product=product, version=version)
    if pending:
        with session_factory.begin() as session:
            repositories.mark_pool_changes_announced(
                session=session, change_ids=[change.id for change in pending])
    return newest


def load_product(
    *, detector: Detector, session_factory: sessionmaker[Session], product: str
) -> ReferenceState | None:
    """(Re)load one product's active pool images into the detector.

    Returns:
        The product's memory (its ``version`` is ``repositories.pool_version``), or None when the
        pool has no image for it.
    """
    with session_factory() as session:
        # Version first: a change committed between the two reads then leaves the memory
        # looking older than it is (one extra reload later), never newer (a missed one).
        version = repositories.pool_version(session=session, product=product)
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
