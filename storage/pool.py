"""The few-shot pool: normal reference images per product. Functions never commit."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import PoolEntryNotFoundError
from storage.models import PoolEntry
from storage.types import utcnow


def add_pool_entry(
    *,
    session: Session,
    product: str,
    image_png: bytes,
    source: str,
    added_by: str,
    frame_pk: int | None = None,
) -> int:
    """Add an active normal reference image to a product's pool.

    Args:
        session: Open session.
        product: Product the reference belongs to.
        image_png: PNG-encoded image.
        source: Where it came from, e.g. ``"seed"`` or ``"review"``.
        added_by: Who added it (user name or process).
        frame_pk: The stored frame it was taken from (``VerdictView.frame_pk``), if any.

    Returns:
        The new entry's id.
    """
    entry = PoolEntry(
        product=product,
        image=image_png,
        source=source,
        source_frame_pk=frame_pk,
        added_by=added_by,
    )
    session.add(entry)
    session.flush()
    return entry.id


def list_pool_images(*, session: Session, product: str) -> list[bytes]:
    """Return the PNG bytes of a product's active entries, oldest first.

    Args:
        session: Open session.
        product: Product whose pool to load.

    Returns:
        Images in insertion order (empty when the product has no active entry).
    """
    query = (
        select(PoolEntry.image)
        .where(PoolEntry.product == product, PoolEntry.active.is_(True))
        .order_by(PoolEntry.added_at, PoolEntry.id)
    )
    return list(session.scalars(query))


def pool_products(*, session: Session) -> list[str]:
    """Return the products that have at least one active entry, sorted by name."""
    query = (
        select(PoolEntry.product)
        .where(PoolEntry.active.is_(True))
        .distinct()
        .order_by(PoolEntry.product)
    )
    return list(session.scalars(query))


def deactivate_pool_entry(*, session: Session, entry_id: int, actor: str) -> None:
    """Take an entry out of its pool, keeping the row (and who removed it) for the audit.

    Deactivating an inactive entry changes nothing, so the first actor is kept.

    Args:
        session: Open session.
        entry_id: Pool entry id.
        actor: Who removed it.

    Raises:
        PoolEntryNotFoundError: if there is no such entry.
    """
    entry = session.get(PoolEntry, entry_id)
    if entry is None:
        raise PoolEntryNotFoundError(entry_id)
    if entry.active:
        entry.active = False
        entry.deactivated_by = actor
        entry.deactivated_at = utcnow()
        session.flush()
