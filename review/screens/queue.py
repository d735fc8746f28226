"""Queue: the flagged frames, newest first, paged in the database, with filters.

Keyboard: ← / → page, 1-9 open the n-th frame of the page.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import streamlit as st

from review import auth, data, labels
from storage.repositories import REVIEW_FILTERS, QueueFilter, VerdictView

PAGE_SIZE = 25
FRAME_PAGE = Path(__file__).resolve().parent / "frame.py"
TIME_RANGES = {
    "Any time": None,
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Custom dates": None,
}
REVIEW_LABELS = {
    "unreviewed": "Unreviewed",
    "all": "All",
    "reviewed": "Reviewed",
    "defect": "Defect confirmed",
    "normal": "Not a defect",
    "unsure": "Unsure",
}


def render() -> None:
    """Draw the queue page."""
    auth.page_user()
    url = data.database_url()
    st.title("Queue")
    filters = _filters(url)
    if st.session_state.get("queue_filters") != filters:
        st.session_state.queue_filters = filters
        st.session_state.queue_page = 0
    page = int(st.session_state.get("queue_page", 0))
    views, total = data.queue_page(url, filters, PAGE_SIZE, page * PAGE_SIZE)
    # Counts stop at data.COUNT_CAP: beyond it the last page is unknown ("400+").
    capped = total > data.COUNT_CAP
    pages = max(1, -(-min(total, data.COUNT_CAP) // PAGE_SIZE))
    if page >= pages and not (capped and views):  # the queue shrank under us
        st.session_state.queue_page = page = pages - 1
        views, total = data.queue_page(url, filters, PAGE_SIZE, page * PAGE_SIZE)
        capped = total > data.COUNT_CAP
    older = page + 1 < pages or (capped and len(views) == PAGE_SIZE)

    unreviewed, matching, _ = st.columns([1, 1, 3])
    unreviewed.metric("Unreviewed flagged frames",
                      labels.count(data.unreviewed_count(url), data.COUNT_CAP))
    matching.metric("Matching the filters", labels.count(total, data.COUNT_CAP))
    of = f"{pages:,}+" if capped else f"{pages:,}"
    _pager(page, of, older, key="top")
    if not views:
        st.info("No frames match these filters.")
        return
    for position, view in enumerate(views):
        _row(url, view, position)
    _pager(page, of, older, key="bottom", shortcuts=False)


def _filters(url: str) -> QueueFilter:
    options = data.queue_options(url)
    with st.sidebar:
        st.subheader("Filters")
        cameras = st.multiselect("Line / camera", options.cameras, key="f_cameras")
        products = st.multiselect("Product", options.products, key="f_products")
        review = st.selectbox("Review status", list(REVIEW_LABELS),
                              format_func=REVIEW_LABELS.__getitem__, key="f_review")
        span = st.selectbox("Time", list(TIME_RANGES), key="f_time")
        since = until = None
        if span == "Custom dates":
            picked = st.date_input("From - to", value=(date.today() - timedelta(days=7),
                                                       date.today()), key="f_dates")
            if isinstance(picked, tuple) and len(picked) == 2:
                since = datetime.combine(picked[0], time.min, UTC)
                until = datetime.combine(picked[1] + timedelta(days=1), time.min, UTC)
        elif TIME_RANGES[span] is not None:
            # Rounded to the minute so the cache key holds still between reruns.
            now = datetime.now(UTC).replace(second=0, microsecond=0)
            since = now - TIME_RANGES[span]
        low, high = st.columns(2)
        score_min = low.number_input("Score ≥", value=None, step=0.05, key="f_score_min")
        score_max = high.number_input("Score ≤", value=None, step=0.05, key="f_score_max")
    assert review in REVIEW_FILTERS
    return QueueFilter(cameras=tuple(cameras), products=tuple(products), since=since,
                       until=until, review=review, score_min=score_min, score_max=score_max)


def _pager(page: int, pages: str, older: bool, *, key: str, shortcuts: bool = True) -> None:
    back, where, forward, _ = st.columns([1, 2, 1, 4], vertical_alignment="center")
    if back.button("← Newer", key=f"prev_{key}", disabled=page == 0,
                   shortcut="left" if shortcuts else None):
        st.session_state.queue_page = page - 1
        st.rerun()
    where.markdown(f"Page **{page + 1}** of **{pages}**")
    if forward.button("Older →", key=f"next_{key}", disabled=not older,
                      shortcut="right" if shortcuts else None):
        st.session_state.queue_page = page + 1
        st.rerun()


def _row(url: str, view: VerdictView, position: int) -> None:
    thumbs = data.thumbnails(url, (view.id,))
    with st.container(border=True):
        picture, facts, action = st.columns([1, 5, 1], vertical_alignment="center")
        thumb = thumbs.get(view.id)
        if thumb is None:
            picture.caption("image unavailable" if view.image_uri else "no image")
        else:
            picture.image(thumb, width=120)
        answer = view.answer if len(view.answer) <= 160 else view.answer[:157] + "..."
        facts.markdown(
            f"**{view.camera_id} / {view.frame_id}** · {view.product} · "
            f"{labels.when(view.created_at)} {labels.status_badge(view.review_status)}"
        )
        facts.markdown(
            f"score **{view.score:.3f}** vs threshold {view.threshold:.3f} · "
            f"{', '.join(view.positions) or 'no position'}"
            + (f" · by {view.reviewed_by}" if view.reviewed_by else "")
        )
        facts.caption(answer)
        shortcut = str(position + 1) if position < 9 else None
        if action.button("Open", key=f"open_{view.id}", shortcut=shortcut,
                         icon=":material/open_in_new:"):
            st.session_state.verdict_id = view.id
            st.switch_page(FRAME_PAGE, query_params={"verdict": str(view.id)})


if __name__ == "__main__":
    render()
