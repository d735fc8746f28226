"""The few-shot pool: normal reference images per product, their versions and change log.

Every change (add, remove, restore) raises the product's version in ``pool_versions`` and
writes a ``pool_changes`` row in the same transaction: the audit trail ("who changed what"),
the version history, and the outbox of announcements (``announced_at`` stays None until a
publisher has put the change on the pool topic). The ``pool_*`` functions at the bottom are
the dashboard's actions: they check the acting user's role first. Functions never commit.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from PIL import Image, UnidentifiedImageError
from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.errors import PoolEntryNotFoundError, UnsupportedDatabaseError
from storage.models import PoolChange, PoolEntry, PoolVersion
from storage.types import utcnow
from storage.users import require_role

POOL_ROLE = "engineer"  # the least role that may change a pool
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class PoolEntryInfo:
    """One pool entry without its image."""

    id: int
    product: str
    source: str
    added_by: str
    added_at: datetime
    active: bool
    source_frame_pk: int | None = None
    deactivated_by: str | None = None
    deactivated_at: datetime | None = None


@dataclass(frozen=True)
class PoolChangeView:
    """One committed change of a product's pool.

    Attributes:
        id: Change id (increases with time over all products).
        product: The product.
        version: The product's pool version after the change.
        action: ``"add"``, ``"remove"`` or ``"restore"``.
        entry_id: The entry added, removed or restored.
        actor: Who changed it.
        note: Why (free text, e.g. ``"undo"``).
        verdict_id: The reviewed verdict that led to it, if any.
        created_at: When it was committed.
        announced_at: When it was published on the pool topic (None: not yet).
    """

    id: int
    product: str
    version: int
    action: str
    entry_id: int
    actor: str
    note: str
    verdict_id: int | None
    created_at: datetime
    announced_at: datetime | None


def to_png(data: bytes) -> bytes:
    """Re-encode an uploaded image file as an RGB PNG (the pool's storage format).

    PNG bytes already in RGB are kept as they are.

    Raises:
        ValueError: not an image, or larger than the upload limits.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        msg = f"image of {len(data)} bytes exceeds the limit of {MAX_UPLOAD_BYTES}"
        raise ValueError(msg)
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_UPLOAD_PIXELS:
            msg = f"image of {image.width}x{image.height} pixels exceeds the limit"
            raise ValueError(msg)
        if data.startswith(PNG_MAGIC) and image.mode == "RGB":
            return data
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        msg = f"not a readable image ({type(exc).__name__})"
        raise ValueError(msg) from exc
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def add_pool_entry(
    *,
    session: Session,
    product: str,
    image_png: bytes,
    source: str,
    added_by: str,
    frame_pk: int | None = None,
    verdict_id: int | None = None,
    note: str = "",
) -> int:
    """Add an active normal reference image to a product's pool (and log the change).

    Args:
        session: Open session.
        product: Product the reference belongs to.
        image_png: PNG-encoded image.
        source: Where it came from, e.g. ``"seed"``, ``"cli"``, ``"review"``, ``"upload"``.
        added_by: Who added it (user name or process).
        frame_pk: The stored frame it was taken from (``VerdictView.frame_pk``), if any.
        verdict_id: The reviewed verdict that led to it, if any.
        note: Why, for the change log.

    Returns:
        The new entry's id.
    """
    entry = PoolEntry(product=product, image=image_png, source=source,
                      source_frame_pk=frame_pk, added_by=added_by)
    session.add(entry)
    session.flush()
    _log_change(session, product=product, action="add", entry_id=entry.id, actor=added_by,
                note=note, verdict_id=verdict_id)
    return entry.id


def deactivate_pool_entry(*, session: Session, entry_id: int, actor: str,
                          note: str = "") -> PoolChangeView | None:
    """Take an entry out of its pool, keeping the row (and who removed it) for the audit.

    Deactivating an inactive entry changes nothing, so the first actor is kept.

    Args:
        session: Open session.
        entry_id: Pool entry id.
        actor: Who removed it.
        note: Why, for the change log (e.g. ``"undo"``).

    Returns:
        The logged change, or None when the entry was inactive already.

    Raises:
        PoolEntryNotFoundError: if there is no such entry.
    """
    entry = _entry_for_update(session, entry_id)
    if not entry.active:
        return None
    entry.active = False
    entry.deactivated_by = actor
    entry.deactivated_at = utcnow()
    session.flush()
    return _log_change(session, product=entry.product, action="remove", entry_id=entry_id,
                       actor=actor, note=note)


def restore_pool_entry(*, session: Session, entry_id: int, actor: str,
                       note: str = "") -> PoolChangeView | None:
    """Put a removed entry back into its pool.

    Returns:
        The logged change, or None when the entry was active already.

    Raises:
        PoolEntryNotFoundError: if there is no such entry.
    """
    entry = _entry_for_update(session, entry_id)
    if entry.active:
        return None
    entry.active = True
    entry.deactivated_by = None
    entry.deactivated_at = None
    session.flush()
    return _log_change(session, product=entry.product, action="restore", entry_id=entry_id,
                       actor=actor, note=note)


def pool_version(*, session: Session, product: str) -> int:
    """The product's pool version: raised by every change (0: it never had a pool)."""
    version = session.scalar(select(PoolVersion.version).where(PoolVersion.product == product))
    return int(version or 0)


def pool_versions(*, session: Session) -> dict[str, int]:
    """Every product that ever had a pool, with its current version."""
    return {product: int(version) for product, version in
            session.execute(select(PoolVersion.product, PoolVersion.version))}


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
               PoolEntry.added_at, PoolEntry.active, PoolEntry.source_frame_pk,
               PoolEntry.deactivated_by, PoolEntry.deactivated_at)
        .where(PoolEntry.product == product)
        .order_by(PoolEntry.added_at, PoolEntry.id)
    )
    if not include_inactive:
        query = query.where(PoolEntry.active.is_(True))
    return [PoolEntryInfo(*row) for row in session.execute(query)]


def get_pool_entry(*, session: Session, entry_id: int) -> PoolEntryInfo:
    """Return one pool entry without its image, active or not.

    Raises:
        PoolEntryNotFoundError: if there is no such entry.
    """
    row = session.execute(
        select(PoolEntry.id, PoolEntry.product, PoolEntry.source, PoolEntry.added_by,
               PoolEntry.added_at, PoolEntry.active, PoolEntry.source_frame_pk,
               PoolEntry.deactivated_by, PoolEntry.deactivated_at)
        .where(PoolEntry.id == entry_id)).one_or_none()
    if row is None:
        raise PoolEntryNotFoundError(entry_id)
    return PoolEntryInfo(*row)


def pool_entry_images(*, session: Session, entry_ids: Sequence[int]) -> dict[int, bytes]:
    """The PNG bytes of the given entries (for thumbnails), by entry id; unknown ids omitted."""
    if not entry_ids:
        return {}
    rows = session.execute(select(PoolEntry.id, PoolEntry.image)
                           .where(PoolEntry.id.in_(list(entry_ids))))
    return {entry_id: image for entry_id, image in rows}


def list_pool_changes(*, session: Session, product: str | None = None,
                      limit: int = 200) -> list[PoolChangeView]:
    """The change log (version history), newest first, of one product or of all."""
    query = select(PoolChange).order_by(PoolChange.id.desc()).limit(limit)
    if product is not None:
        query = query.where(PoolChange.product == product)
    return [_change_view(row) for row in session.scalars(query)]


def unannounced_pool_changes(*, session: Session, limit: int = 500) -> list[PoolChangeView]:
    """Committed changes not yet published on the pool topic, oldest first."""
    query = (select(PoolChange).where(PoolChange.announced_at.is_(None))
             .order_by(PoolChange.id).limit(limit))
    return [_change_view(row) for row in session.scalars(query)]


def mark_pool_changes_announced(*, session: Session, change_ids: Sequence[int]) -> None:
    """Record that these changes are on the pool topic (idempotent)."""
    if change_ids:
        session.execute(update(PoolChange)
                        .where(PoolChange.id.in_(list(change_ids)),
                               PoolChange.announced_at.is_(None))
                        .values(announced_at=utcnow()))


# -- the dashboard's actions (role-checked) ------------------------------------------------
def pool_add(*, session: Session, user: str, product: str, image: bytes,
             source: str = "upload", note: str = "") -> PoolChangeView:
    """Add an uploaded image to a product's pool, as ``user`` (engineer or admin).

    Raises:
        PermissionDeniedError: the user may not change pools.
        ValueError: the bytes are not a readable image within the upload limits.
    """
    require_role(session=session, user=user, role=POOL_ROLE)
    entry_id = add_pool_entry(session=session, product=product, image_png=to_png(image),
                              source=source, added_by=user, note=note)
    return latest_change(session=session, entry_id=entry_id)


def pool_remove(*, session: Session, user: str, entry_id: int,
                note: str = "") -> PoolChangeView | None:
    """Remove an entry from its pool, as ``user`` (engineer or admin); None if inactive.

    Raises:
        PermissionDeniedError: the user may not change pools.
        PoolEntryNotFoundError: no such entry.
    """
    require_role(session=session, user=user, role=POOL_ROLE)
    return deactivate_pool_entry(session=session, entry_id=entry_id, actor=user, note=note)


def pool_restore(*, session: Session, user: str, entry_id: int,
                 note: str = "") -> PoolChangeView | None:
    """Restore a removed entry, as ``user`` (engineer or admin); None if active already.

    Raises:
        PermissionDeniedError: the user may not change pools.
        PoolEntryNotFoundError: no such entry.
    """
    require_role(session=session, user=user, role=POOL_ROLE)
    return restore_pool_entry(session=session, entry_id=entry_id, actor=user, note=note)


def latest_change(*, session: Session, entry_id: int) -> PoolChangeView:
    """The newest logged change of one entry.

    Raises:
        PoolEntryNotFoundError: the entry has no logged change.
    """
    row = session.scalar(select(PoolChange).where(PoolChange.entry_id == entry_id)
                         .order_by(PoolChange.id.desc()).limit(1))
    if row is None:
        raise PoolEntryNotFoundError(entry_id)
    return _change_view(row)


# -- internals ------------------------------------------------------------------------------
def _entry_for_update(session: Session, entry_id: int) -> PoolEntry:
    entry = session.get(PoolEntry, entry_id, with_for_update=True)
    if entry is None:
        raise PoolEntryNotFoundError(entry_id)
    return entry


def _log_change(session: Session, *, product: str, action: str, entry_id: int, actor: str,
                note: str = "", verdict_id: int | None = None) -> PoolChangeView:
    change = PoolChange(product=product, version=_next_version(session, product),
                        action=action, entry_id=entry_id, actor=actor, note=note,
                        verdict_id=verdict_id)
    session.add(change)
    session.flush()
    return _change_view(change)


def _next_version(session: Session, product: str) -> int:
    # One upsert: the row lock serialises concurrent changes of the same product.
    table: Table = PoolVersion.__table__  # type: ignore[assignment]
    dialect = session.get_bind().dialect.name
    insert: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        insert = postgresql.insert(table)
    elif dialect == "sqlite":
        insert = sqlite.insert(table)
    else:
        msg = f"pool versions need INSERT ... ON CONFLICT (SQLite or PostgreSQL), not {dialect}"
        raise UnsupportedDatabaseError(msg)
    statement = (insert.values(product=product, version=1)
                 .on_conflict_do_update(index_elements=["product"],
                                        set_={"version": table.c.version + 1})
                 .returning(table.c.version))
    return int(session.execute(statement).scalar_one())


def _change_view(row: PoolChange) -> PoolChangeView:
    return PoolChangeView(id=row.id, product=row.product, version=row.version,
                          action=row.action, entry_id=row.entry_id, actor=row.actor,
                          note=row.note, verdict_id=row.verdict_id, created_at=row.created_at,
                          announced_at=row.announced_at)
