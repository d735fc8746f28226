"""Aggregates of the Overview page. Never writes.

Verdicts and flags per camera and product over time, review backlog and decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, ColumnElement, case, cast, func, select
from sqlalchemy.orm import Session

from storage.models import Verdict


@dataclass(frozen=True)
class RatePoint:
    """Verdicts of one camera and product in one time bucket.

    Attributes:
        bucket_start: Start of the bucket (aware UTC).
        camera_id: Camera.
        product: Product.
        frames: Verdicts in the bucket (frames/s = frames / bucket seconds).
        flagged: Of which flagged anomalous (anomaly rate = flagged / frames).
        unreviewed: Of the flagged, how many nobody has reviewed yet.
    """

    bucket_start: datetime
    camera_id: str
    product: str
    frames: int
    flagged: int
    unreviewed: int


def rate_series(*, session: Session, since: datetime, until: datetime | None = None,
                bucket_s: int = 3600) -> list[RatePoint]:
    """Verdict counts per ``bucket_s`` seconds, camera and product, oldest bucket first.

    Args:
        session: Open session.
        since: First verdict time included (aware).
        until: End of the window, exclusive (None: now).
        bucket_s: Bucket length in seconds (>= 1).

    Raises:
        ValueError: a bucket shorter than one second.
    """
    if bucket_s < 1:
        msg = f"bucket must be at least 1 s, got {bucket_s}"
        raise ValueError(msg)
    bucket = _bucket(session, bucket_s).label("bucket")
    flagged = func.sum(case((Verdict.anomalous, 1), else_=0))
    unreviewed = func.sum(case((Verdict.anomalous & Verdict.reviewed_at.is_(None), 1), else_=0))
    conditions = [Verdict.created_at >= since]
    if until is not None:
        conditions.append(Verdict.created_at < until)
    # The verdict's own camera/product copies: no join, an index-only range scan of
    # ix_verdicts_created_at (it includes these columns) on PostgreSQL. Sorted here, not in
    # SQL: an ORDER BY makes PostgreSQL sort the window's rows (~3*10^4 a day on a line)
    # before grouping them, where hashing them into a few hundred groups is half the time.
    query = (
        select(bucket, Verdict.camera_id, Verdict.product, func.count(), flagged, unreviewed)
        .where(*conditions)
        .group_by(bucket, Verdict.camera_id, Verdict.product)
    )
    points = [RatePoint(datetime.fromtimestamp(int(start), UTC), camera, product, int(n),
                        int(f or 0), int(u or 0))
              for start, camera, product, n, f, u in session.execute(query)]
    return sorted(points, key=lambda p: (p.bucket_start, p.camera_id, p.product))


def review_counts(*, session: Session, since: datetime | None = None) -> dict[str, int]:
    """Flagged verdicts by review status (``"unreviewed"`` for None), optionally since a time."""
    status = func.coalesce(Verdict.review, "unreviewed")
    query = (select(status, func.count()).select_from(Verdict)
             .where(Verdict.anomalous).group_by(status))
    if since is not None:
        query = query.where(Verdict.created_at >= since)
    return {str(name): int(n) for name, n in session.execute(query)}


def _bucket(session: Session, bucket_s: int) -> ColumnElement[int]:
    # Epoch seconds of the bucket start, as an integer, on both backends.
    if session.get_bind().dialect.name == "sqlite":
        epoch: ColumnElement[int] = cast(func.strftime("%s", Verdict.created_at), BigInteger)
        return (epoch // bucket_s) * bucket_s
    # date_part is float8 arithmetic; extract() is numeric since PostgreSQL 14 (slower per row).
    seconds = func.date_part("epoch", Verdict.created_at)
    return cast(func.floor(seconds / bucket_s) * bucket_s, BigInteger)
