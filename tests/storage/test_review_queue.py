"""The review queue pages and filters in the database; the frame detail has its history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from storage.repositories import (
    COUNT_CAP,
    QueueFilter,
    count_queue,
    count_unreviewed,
    create_user,
    get_frame_detail,
    list_queue,
    queue_images,
    queue_options,
    rate_series,
    record_chat_turn,
    record_verdicts,
    review_counts,
    review_verdict,
)
from tests.storage.factories import T0, make_record


@pytest.fixture
def seeded(session: Session) -> None:
    create_user(session=session, name="olga", password="operator-pw", role="operator")
    records = [make_record(i, camera_id=f"cam-{'ab'[i % 4 // 2]}",
                           product="can" if i % 3 == 0 else "bottle",
                           score=0.5 + i / 100, anomalous=i % 2 == 1,
                           heatmap_png=b"\x89PNG-fake", heatmap_min=0.0, heatmap_max=2.0)
               for i in range(40)]
    # Verdict time follows the index, so "newest first" is checkable.
    for record in records:
        record_verdicts(session=session, records=[record])
        session.flush()
    session.commit()


def test_pages_newest_first_flagged_only(session: Session, seeded: None) -> None:
    first = list_queue(session=session, limit=5)
    second = list_queue(session=session, limit=5, offset=5)

    assert all(v.anomalous for v in first + second)
    ids = [v.id for v in first + second]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 10
    assert count_queue(session=session) == 20 == count_unreviewed(session=session)


def test_counts_stop_one_past_the_cap(session: Session, seeded: None) -> None:
    unreviewed = QueueFilter(review="unreviewed")

    assert COUNT_CAP >= 10_000  # the default counts this small queue exactly
    assert count_queue(session=session, cap=None) == 20 == count_queue(session=session)
    assert count_queue(session=session, cap=5) == 6  # above the cap: "5+"
    assert count_queue(session=session, cap=19) == 20
    assert count_queue(session=session, cap=20) == 20  # exactly the cap: exact
    assert count_queue(session=session, filters=unreviewed, cap=0) == 1
    assert count_unreviewed(session=session, cap=3) == 4
    assert count_unreviewed(session=session, cap=None) == 20
    with pytest.raises(ValueError, match="cap"):
        count_queue(session=session, cap=-1)


def test_filters(session: Session, seeded: None) -> None:
    only = QueueFilter(cameras=("cam-b",), products=("bottle",), score_min=0.6, score_max=0.8)
    views = list_queue(session=session, filters=only, limit=50)
    assert views
    assert all(v.camera_id == "cam-b" and v.product == "bottle"
                         and 0.6 <= v.score <= 0.8 for v in views)
    assert count_queue(session=session, filters=only) == len(views)
    options = queue_options(session=session)
    assert (options.cameras, options.products) == (["cam-a", "cam-b"], ["bottle", "can"])


def test_review_status_filters_and_counts(session: Session, seeded: None) -> None:
    newest = list_queue(session=session, limit=1)[0]
    review_verdict(session=session, verdict_id=newest.id, user="olga", decision="defect")
    session.commit()

    assert count_unreviewed(session=session) == 19
    reviewed = list_queue(session=session, filters=QueueFilter(review="reviewed"))
    assert [v.id for v in reviewed] == [newest.id]
    assert list_queue(session=session, filters=QueueFilter(review="defect"))[0].review_status \
        == "defect"
    assert newest.id not in {v.id for v in list_queue(
        session=session, filters=QueueFilter(review="unreviewed"), limit=50)}
    assert review_counts(session=session) == {"unreviewed": 19, "defect": 1}
    with pytest.raises(ValueError, match="review filter"):
        list_queue(session=session, filters=QueueFilter(review="maybe"))


def test_frame_detail_has_blobs_and_history(session: Session, seeded: None) -> None:
    verdict = list_queue(session=session, limit=1)[0]
    review_verdict(session=session, verdict_id=verdict.id, user="olga", decision="unsure")
    record_chat_turn(session=session, verdict_id=verdict.id, user="olga", question="Why?",
                     answer="Because.")
    session.commit()

    detail = get_frame_detail(session=session, verdict_id=verdict.id)
    assert detail.images.image is not None
    assert detail.images.mask_png is not None
    assert (detail.images.heatmap_png, detail.images.heatmap_max) == (b"\x89PNG-fake", 2.0)
    assert [a.action for a in detail.actions] == ["unsure"]
    assert [m.text for m in detail.chat] == ["Why?", "Because."]
    thumbs = queue_images(session=session, verdict_ids=[verdict.id])
    assert thumbs[verdict.id].mask_png == detail.images.mask_png


def test_rate_series_buckets_per_camera_and_product(session: Session, seeded: None) -> None:
    since = min(v.created_at for v in list_queue(
        session=session, filters=QueueFilter(flagged_only=False), limit=100))
    points = rate_series(session=session, since=since - timedelta(hours=1), bucket_s=3600)

    assert sum(p.frames for p in points) == 40
    assert sum(p.flagged for p in points) == 20 == sum(p.unreviewed for p in points)
    assert {(p.camera_id, p.product) for p in points} == {
        ("cam-a", "bottle"), ("cam-a", "can"), ("cam-b", "bottle"), ("cam-b", "can")}
    assert all(p.bucket_start.tzinfo is not None and p.bucket_start.minute == 0
               for p in points)
    assert T0  # captured times are independent of verdict times
