"""Keyset paging of the review queue: pages cover the queue once, in order, like OFFSET
pages would; camera/product filters read the verdict's own copies."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from storage.models import Verdict
from storage.repositories import QueueCursor, QueueFilter, list_queue, record_verdicts
from tests.storage.factories import T0, make_record


def _seed(session: Session, count: int = 30) -> None:
    records = [make_record(i, camera_id=f"cam-{i % 3}", product="bottle" if i < 15 else "screw",
                           anomalous=i % 2 == 1) for i in range(count)]
    record_verdicts(session=session, records=records)
    for verdict_id in range(1, count + 1):
        # Pairs share a timestamp: the id breaks the tie.
        session.execute(update(Verdict).where(Verdict.id == verdict_id)
                        .values(created_at=T0 + timedelta(minutes=verdict_id // 2)))
    session.commit()


def test_keyset_pages_match_offset_pages(session: Session) -> None:
    _seed(session)
    filters = QueueFilter()
    by_offset = [v.frame_id for v in list_queue(session=session, filters=filters, limit=100)]

    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page = list_queue(session=session, filters=filters, limit=4, after=cursor)
        if not page:
            break
        seen += [v.frame_id for v in page]
        cursor = QueueCursor.after(page[-1])

    assert seen == by_offset
    assert len(seen) == 15  # the flagged half


def test_camera_and_product_filters_without_the_frame_join(session: Session) -> None:
    _seed(session)

    page = list_queue(session=session, filters=QueueFilter(cameras=("cam-1",),
                                                           products=("screw",)), limit=100)

    assert sorted(v.frame_id for v in page) == ["f-19", "f-25"]
    assert all(v.camera_id == "cam-1" and v.product == "screw" for v in page)
