"""Frames and their verdicts: idempotent batch writes and blob-free reads.

Functions never commit: the caller owns the transaction (the worker commits, then commits its
Kafka offsets, so a crash in between replays frames that ``record_verdicts`` then ignores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from storage.errors import UnsupportedDatabaseError, VerdictNotFoundError
from storage.models import Frame, Verdict


@dataclass(frozen=True)
class VerdictRecord:
    """One frame and the detector's verdict on it, as the worker persists them.

    Attributes:
        camera_id: Camera that produced the frame.
        frame_id: Camera-unique frame id; ``(camera_id, frame_id)`` is the idempotency key.
        product: Product (few-shot pool) the frame was inspected against.
        captured_at: Capture time, timezone-aware.
        image: Encoded PNG/JPEG bytes, or None when only ``image_uri`` is kept.
        image_uri: Where the image lives when not stored inline.
        metadata: JSON-serialisable annotations from the envelope.
        score: Anomaly score; the frame is anomalous when it exceeds ``threshold``.
        threshold: Calibrated threshold the score was compared against.
        anomalous: Whether the frame was flagged.
        positions: Grid words locating the defect, e.g. ``["top left"]``.
        answer: The model's text answer.
        mask_png: Binary defect mask as PNG, or None.
        model_id: Model/profile that produced the verdict.
        latency_ms: Inference latency in milliseconds.
        worker: Worker that processed the frame.
        details: Model-specific evidence (e.g. local/global scores and their thresholds).
        heatmap_png: The anomaly map as an 8-bit greyscale PNG at map resolution, or None.
        heatmap_min: Map value of PNG pixel 0.
        heatmap_max: Map value of PNG pixel 255.
        image_sha256: Hex SHA-256 of the image behind ``image_uri``, when known.
    """

    camera_id: str
    frame_id: str
    product: str
    captured_at: datetime
    image: bytes | None
    image_uri: str | None
    metadata: dict[str, Any]
    score: float
    threshold: float
    anomalous: bool
    positions: list[str]
    answer: str
    mask_png: bytes | None
    model_id: str
    latency_ms: float
    worker: str
    details: dict[str, Any] = field(default_factory=dict)
    heatmap_png: bytes | None = None
    heatmap_min: float | None = None
    heatmap_max: float | None = None
    image_sha256: str | None = None


@dataclass(frozen=True)
class VerdictView:
    """A verdict joined with its frame, without the image, mask and heatmap blobs.

    ``id`` is the verdict id; ``frame_pk`` the frame row's id (for ``add_pool_entry``).
    ``review_status`` is the latest review decision (``"defect"``, ``"normal"``,
    ``"unsure"``; None: not reviewed), by ``reviewed_by`` at ``reviewed_at``.
    """

    id: int
    frame_pk: int
    camera_id: str
    frame_id: str
    product: str
    captured_at: datetime
    score: float
    threshold: float
    anomalous: bool
    positions: list[str]
    answer: str
    model_id: str
    latency_ms: float
    worker: str
    created_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    review_status: str | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    image_uri: str | None = None


# The columns of a VerdictView, in its field order (shared with the review queue).
VIEW_COLUMNS = (
    Verdict.id, Verdict.frame_pk, Frame.camera_id, Frame.frame_id, Frame.product,
    Frame.captured_at, Verdict.score, Verdict.threshold, Verdict.anomalous, Verdict.positions,
    Verdict.answer, Verdict.model_id, Verdict.latency_ms, Verdict.worker, Verdict.created_at,
    Verdict.details, Verdict.review.label("review_status"), Verdict.reviewed_by,
    Verdict.reviewed_at,
    Frame.image_uri,
)


def view_from_row(row: Any) -> VerdictView:
    """Build a view from a mapping row of ``VIEW_COLUMNS``."""
    return VerdictView(**{**row, "positions": list(row["positions"]),
                          "details": dict(row["details"] or {})})


def record_verdicts(*, session: Session, records: Sequence[VerdictRecord]) -> int:
    """Insert the frames and verdicts of a batch, ignoring frames already stored.

    Idempotent on ``(camera_id, frame_id)``: a replayed frame (in a later batch or twice in
    this one, where the first occurrence wins) adds no frame row and no verdict. Runs three
    set-based statements whatever the batch size. Does not commit.

    Args:
        session: Session bound to SQLite or PostgreSQL.
        records: The batch.

    Returns:
        How many verdicts were newly inserted.

    Raises:
        UnsupportedDatabaseError: for a backend without ``INSERT ... ON CONFLICT``.
        ValueError: if a ``captured_at`` is naive.
    """
    batch: dict[tuple[str, str], VerdictRecord] = {}
    for record in records:
        if record.captured_at.utcoffset() is None:
            msg = f"frame {record.camera_id}/{record.frame_id}: captured_at is a naive datetime"
            raise ValueError(msg)
        batch.setdefault((record.camera_id, record.frame_id), record)
    if not batch:
        return 0

    frames = _table(Frame)
    session.execute(
        _insert_ignoring_conflicts(session, frames, ["camera_id", "frame_id"]),
        [_frame_row(record) for record in batch.values()],
    )
    frame_pks = {
        (camera_id, frame_id): pk
        for camera_id, frame_id, pk in session.execute(
            select(Frame.camera_id, Frame.frame_id, Frame.id).where(
                tuple_(Frame.camera_id, Frame.frame_id).in_(list(batch))
            )
        )
    }
    verdicts = _table(Verdict)
    inserted = session.execute(
        _insert_ignoring_conflicts(session, verdicts, ["frame_pk"]).returning(verdicts.c.id),
        [_verdict_row(record, frame_pks[key]) for key, record in batch.items()],
    )
    return len(inserted.all())


def count_verdicts(
    *,
    session: Session,
    product: str | None = None,
    anomalous: bool | None = None,
    camera_id: str | None = None,
) -> int:
    """Count verdicts, optionally of one product, one outcome and/or one camera.

    Args:
        session: Open session.
        product: Only frames of this product.
        anomalous: Only flagged (True) or only normal (False) verdicts.
        camera_id: Only frames of this camera.

    Returns:
        The number of matching verdicts (one per stored frame).
    """
    query = select(func.count(Verdict.id)).select_from(Verdict)
    if product is not None or camera_id is not None:
        query = query.join(Frame, Verdict.frame_pk == Frame.id)
    query = query.where(*_conditions(product=product, anomalous=anomalous))
    if camera_id is not None:
        query = query.where(Frame.camera_id == camera_id)
    return int(session.scalar(query) or 0)


def delete_frames(*, session: Session, camera_ids: Sequence[str]) -> int:
    """Delete the frames of the given cameras with their verdicts (benchmark clean-up).

    Args:
        session: Open session.
        camera_ids: Cameras whose frames go.

    Returns:
        The number of frames deleted.
    """
    result = session.execute(delete(Frame).where(Frame.camera_id.in_(list(camera_ids))))
    return int(getattr(result, "rowcount", 0) or 0)


def list_verdicts(
    *,
    session: Session,
    anomalous: bool | None = None,
    product: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[VerdictView]:
    """List verdicts newest first, without blobs (see ``get_verdict_images``).

    Args:
        session: Open session.
        anomalous: Only flagged (True) or only normal (False) verdicts.
        product: Only frames of this product.
        limit: Page size.
        offset: Rows to skip (paging).

    Returns:
        Up to ``limit`` views ordered by verdict creation time, then id, descending.
    """
    query = (
        select(*VIEW_COLUMNS)
        .join_from(Verdict, Frame, Verdict.frame_pk == Frame.id)
        .where(*_conditions(product=product, anomalous=anomalous))
        .order_by(Verdict.created_at.desc(), Verdict.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [view_from_row(row) for row in session.execute(query).mappings()]


def get_verdict(*, session: Session, verdict_id: int) -> VerdictView:
    """Load one verdict with its frame, without blobs.

    Raises:
        VerdictNotFoundError: if there is no such verdict.
    """
    row = session.execute(
        select(*VIEW_COLUMNS).join_from(Verdict, Frame, Verdict.frame_pk == Frame.id)
        .where(Verdict.id == verdict_id)
    ).mappings().one_or_none()
    if row is None:
        raise VerdictNotFoundError(verdict_id)
    return view_from_row(row)


def get_verdict_images(*, session: Session, verdict_id: int) -> tuple[bytes | None, bytes | None]:
    """Load the blobs of one verdict.

    Args:
        session: Open session.
        verdict_id: Verdict id (``VerdictView.id``).

    Returns:
        ``(frame image, mask PNG)``; either may be None when it was not stored.

    Raises:
        VerdictNotFoundError: if there is no such verdict.
    """
    row = session.execute(
        select(Frame.image, Verdict.mask_png)
        .join(Verdict, Verdict.frame_pk == Frame.id)
        .where(Verdict.id == verdict_id)
    ).one_or_none()
    if row is None:
        raise VerdictNotFoundError(verdict_id)
    return row.image, row.mask_png


def _conditions(*, product: str | None, anomalous: bool | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if product is not None:
        conditions.append(Frame.product == product)
    if anomalous is not None:
        # The bare column, not ``IS TRUE``: the partial index ix_verdicts_flagged applies.
        conditions.append(and_(Verdict.anomalous) if anomalous else ~Verdict.anomalous)
    return conditions


def _table(model: type[Frame] | type[Verdict]) -> Table:
    return cast(Table, model.__table__)


def _insert_ignoring_conflicts(session: Session, table: Table, keys: list[str]) -> Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
    msg = f"record_verdicts needs INSERT ... ON CONFLICT (SQLite or PostgreSQL), not {dialect}"
    raise UnsupportedDatabaseError(msg)


def _frame_row(record: VerdictRecord) -> dict[str, Any]:
    return {
        "camera_id": record.camera_id,
        "frame_id": record.frame_id,
        "product": record.product,
        "captured_at": record.captured_at,
        "image": record.image,
        "image_uri": record.image_uri,
        "image_sha256": record.image_sha256,
        "metadata": record.metadata,
    }


def _verdict_row(record: VerdictRecord, frame_pk: int) -> dict[str, Any]:
    return {
        "frame_pk": frame_pk,
        "camera_id": record.camera_id,
        "product": record.product,
        "score": float(record.score),
        "threshold": float(record.threshold),
        "anomalous": bool(record.anomalous),
        "positions": list(record.positions),
        "details": dict(record.details),
        "answer": record.answer,
        "mask_png": record.mask_png,
        "heatmap_png": record.heatmap_png,
        "heatmap_min": record.heatmap_min,
        "heatmap_max": record.heatmap_max,
        "model_id": record.model_id,
        "latency_ms": float(record.latency_ms),
        "worker": record.worker,
    }
