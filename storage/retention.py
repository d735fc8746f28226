"""Retention's SQL: which frames lose their image or their rows, claimed so runs never collide.

Rules (checked here, in every statement, never left to the caller):

* a flagged frame keeps its image and rows until it has been reviewed;
* a frame a pool entry was taken from is never touched (pool images are never deleted);
* normal images go after ``normal_image_days``, reviewed flagged images after
  ``flagged_image_days``, whole frames (verdict, review trail, chat) after ``verdict_days``,
  all counted from the frame's arrival.

Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent runs take disjoint
batches; a blob several frames share is decided under a transaction-scoped advisory lock on
its URI (:func:`lock_uri`), so exactly one run deletes it, after the last reference goes.
SQLite (one host, one writer) ignores both. Functions never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from storage.models import Frame, PoolEntry, Verdict


@dataclass(frozen=True)
class ProductScope:
    """Which products a policy covers: ``products`` (explicit), or all but ``excluded``."""

    products: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    def condition(self) -> ColumnElement[bool]:
        """The SQL condition on ``frames.product``."""
        if self.products:
            return Frame.product.in_(self.products)
        if self.excluded:
            return Frame.product.not_in(self.excluded)
        return Frame.id.is_not(None)


@dataclass(frozen=True)
class ClaimedFrame:
    """A frame claimed by a retention batch, with what it still keeps."""

    frame_pk: int
    image_uri: str | None
    inline: bool
    anomalous: bool


def _not_pooled() -> ColumnElement[bool]:
    return ~exists().where(PoolEntry.source_frame_pk == Frame.id)


def _reviewed_or_normal() -> ColumnElement[bool]:
    return or_(~Verdict.anomalous, Verdict.reviewed_at.is_not(None))


def _keeps_image() -> ColumnElement[bool]:
    return or_(Frame.image_uri.is_not(None), Frame.image.is_not(None))


def _image_due(normal_before: datetime | None,
               flagged_before: datetime | None) -> ColumnElement[bool] | None:
    due: list[ColumnElement[bool]] = []
    if normal_before is not None:
        due.append(and_(~Verdict.anomalous, Frame.received_at < normal_before))
    if flagged_before is not None:
        due.append(and_(Verdict.anomalous, Verdict.reviewed_at.is_not(None),
                        Frame.received_at < flagged_before))
    return or_(*due) if due else None


def _claim(session: Session, conditions: list[ColumnElement[bool]], limit: int
           ) -> list[ClaimedFrame]:
    query = (
        select(Frame.id, Frame.image_uri, Frame.image.is_not(None), Verdict.anomalous)
        .join(Verdict, Verdict.frame_pk == Frame.id)
        .where(*conditions, _not_pooled())
        .order_by(Frame.id)
        .limit(limit)
        .with_for_update(of=Frame, skip_locked=True)
    )
    return [ClaimedFrame(pk, uri, bool(inline), bool(anomalous))
            for pk, uri, inline, anomalous in session.execute(query)]


def claim_images(*, session: Session, scope: ProductScope, normal_before: datetime | None,
                 flagged_before: datetime | None, limit: int) -> list[ClaimedFrame]:
    """Lock up to ``limit`` frames whose kept image is due (skipping frames other runs hold).

    Args:
        session: Open session (the claim lasts until its transaction ends).
        scope: Products of the policy.
        normal_before: Normal frames that arrived before this lose their image (None: never).
        flagged_before: Reviewed flagged frames that arrived before this lose it (None: never).
        limit: Batch size.

    Returns:
        The claimed frames, oldest first; empty when nothing (unclaimed) is due.
    """
    due = _image_due(normal_before, flagged_before)
    if due is None:
        return []
    return _claim(session, [scope.condition(), _keeps_image(), due], limit)


def claim_expired_frames(*, session: Session, scope: ProductScope, before: datetime,
                         limit: int) -> list[ClaimedFrame]:
    """Lock up to ``limit`` frames whose rows are due (never unreviewed flagged, never pooled).

    Args:
        session: Open session.
        scope: Products of the policy.
        before: Frames that arrived before this go, with their verdict and review trail.
        limit: Batch size.

    Returns:
        The claimed frames, oldest first.
    """
    conditions = [scope.condition(), Frame.received_at < before, _reviewed_or_normal()]
    return _claim(session, conditions, limit)


def lock_uri(*, session: Session, uri: str) -> None:
    """Hold a transaction-scoped lock on ``uri`` (PostgreSQL; a no-op on SQLite).

    Take the locks of a batch in sorted order (no deadlock between runs).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(uri, 0))))


def uri_referenced_elsewhere(*, session: Session, uri: str, excluding: Sequence[int]) -> bool:
    """Whether a frame outside ``excluding`` still keeps the blob at ``uri``.

    Call after :func:`lock_uri`: the statement then sees every other run's committed
    release, so the last run to let go of a shared blob is the one that deletes it.
    """
    query = select(Frame.id).where(Frame.image_uri == uri, Frame.id.not_in(list(excluding)))
    return session.execute(query.limit(1)).first() is not None


def release_images(*, session: Session, frame_pks: Sequence[int]) -> int:
    """Forget the images of these frames (URI and inline bytes; the hash stays as a record).

    Returns:
        How many frame rows changed.
    """
    if not frame_pks:
        return 0
    result = session.execute(
        update(Frame).where(Frame.id.in_(list(frame_pks)), _keeps_image())
        .values(image=None, image_uri=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def delete_frames(*, session: Session, frame_pks: Sequence[int]) -> int:
    """Delete these frames with their verdicts, review trail and chat (cascade).

    Returns:
        How many frames were deleted.
    """
    if not frame_pks:
        return 0
    result = session.execute(delete(Frame).where(Frame.id.in_(list(frame_pks))))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DueCounts:
    """What a run would delete now (dry run)."""

    normal_images: int
    flagged_images: int
    frames: int


def count_due(*, session: Session, scope: ProductScope, normal_before: datetime | None,
              flagged_before: datetime | None, frames_before: datetime | None) -> DueCounts:
    """Count what is due under a policy, changing and locking nothing.

    Returns:
        Images of normal frames, images of reviewed flagged frames and whole frames due.
    """
    def count(*conditions: ColumnElement[bool]) -> int:
        query = (select(func.count()).select_from(Frame)
                 .join(Verdict, Verdict.frame_pk == Frame.id)
                 .where(scope.condition(), _not_pooled(), *conditions))
        return int(session.scalar(query) or 0)

    frame_due = (and_(Frame.received_at < frames_before, _reviewed_or_normal())
                 if frames_before is not None else None)
    # An image whose frame goes as a whole is counted with the frames, as a run does.
    image_only = [~frame_due] if frame_due is not None else []
    normal = (count(_keeps_image(), ~Verdict.anomalous, Frame.received_at < normal_before,
                    *image_only) if normal_before is not None else 0)
    flagged = (count(_keeps_image(), and_(Verdict.anomalous), Verdict.reviewed_at.is_not(None),
                     Frame.received_at < flagged_before, *image_only)
               if flagged_before is not None else 0)
    frames = count(frame_due) if frame_due is not None else 0
    return DueCounts(normal, flagged, frames)
