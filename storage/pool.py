"""The few-shot pool: normal reference images per product. Functions never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.errors import PoolEntryNotFoundError
from storage.models import PoolEntry
from storage.types import utcnow


@dataclass(frozen=True)
class PoolEntryInfo:
    """One pool entry without its image."""

    id: int
    product: str
    source: str
    added_by: str
    added_at: datetime
    active: bool


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


def pool_version(*, session: Session, product: str) -> int:
    """A number that increases with every change of ``product``'s pool (0: never had one).

    The highest entry id of the product (ids only grow, so every addition raises it) plus
    its number of deactivated entries (every removal raises that): no extra column, and
    two workers reading the same pool agree on it.

    Args:
        session: Open session.
        product: The product.

    Returns:
        The pool's version.
    """
    newest = session.scalar(select(func.max(PoolEntry.id)).where(PoolEntry.product == product))
    removed = session.scalar(
        select(func.count()).select_from(PoolEntry)
        .where(PoolEntry.product == product, PoolEntry.active.is_(False))
    )
    return int(newest or 0) + int(removed or 0)


def list_pool_entries(*, session: Session, product: str,
                      include_inactive: bool = False) -> list[PoolEntryInfo]:
    """Return the product's pool entries without their images, oldest first.

    Args:
        session: Open session.
        product: The product.
        include_inactive: Also list removed entries.

    Returns:
        Active entries (all entries with ``include_inactive``) in insertion order.
    """
    query = (
        select(PoolEntry.id, PoolEntry.product, PoolEntry.source, PoolEntry.added_by,
               PoolEntry.added_at, PoolEntry.active)
        .where(PoolEntry.product == product)
        .order_by(PoolEntry.added_at, PoolEntry.id)
    )
    if not include_inactive:
        query = query.where(PoolEntry.active.is_(True))
    return [PoolEntryInfo(*row) for row in session.execute(query)]


def get_pool_entry(*, session: Session, entry_id: int) -> PoolEntryInfo:
    """Return one pool entry without its image.

    Args:
        session: Open session.
        entry_id: Pool entry id.

    Returns:
        The entry, active or not.

    Raises:
        PoolEntryNotFoundError: if there is no such entry.
    """
    entry = session.get(PoolEntry, entry_id)
    if entry is None:
        raise PoolEntryNotFoundError(entry_id)
    return PoolEntryInfo(entry.id, entry.product, entry.source, entry.added_by,
                         entry.added_at, entry.active)


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
