"""Minimal review page: counts, the latest flagged verdicts, and one flagged frame in detail.

Run with ``streamlit run review/app.py``; the database is ``AGPT_DATABASE_URL``
(default ``sqlite:///var/agpt.sqlite``). Reads only: it never writes to the database.
"""

from __future__ import annotations

import os

import streamlit as st
from PIL import UnidentifiedImageError
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from review.overlay import overlay_mask
from storage.engine import DEFAULT_DATABASE_URL, make_engine, make_session_factory
from storage.repositories import VerdictView, count_verdicts, get_verdict_images, list_verdicts

DATABASE_URL_ENV = "AGPT_DATABASE_URL"
RECENT_FLAGGED = 50


def database_url() -> str:
    """The database this page reads (``AGPT_DATABASE_URL``)."""
    return os.environ.get(DATABASE_URL_ENV, DEFAULT_DATABASE_URL)


@st.cache_resource(show_spinner=False)
def cached_engine(url: str) -> Engine:
    """One engine per URL for the whole Streamlit server, shared by every session."""
    return make_engine(url)


def main() -> None:
    """Render the page."""
    st.set_page_config(page_title="AnomalyGPT review", layout="wide")
    st.title("AnomalyGPT review")
    url = database_url()
    sessions = make_session_factory(cached_engine(url))
    try:
        with sessions() as session:
            total = count_verdicts(session=session)
            flagged_total = count_verdicts(session=session, anomalous=True)
            flagged = list_verdicts(session=session, anomalous=True, limit=RECENT_FLAGGED)
    except DBAPIError as exc:
        where = make_url(url).render_as_string(hide_password=True)
        st.error(f"Cannot read the database at {where} (is it migrated?): {exc.orig}")
        st.stop()

    frames_column, flagged_column = st.columns(2)
    frames_column.metric("Frames", total)
    flagged_column.metric("Flagged", flagged_total)
    if not flagged:
        st.info("No flagged frames yet.")
        return

    st.subheader(f"Latest flagged frames (up to {RECENT_FLAGGED})")
    st.dataframe([_table_row(view) for view in flagged], hide_index=True)
    by_id = {view.id: view for view in flagged}
    selected = st.selectbox(
        "Flagged frame",
        list(by_id),
        format_func=lambda verdict_id: _label(by_id[verdict_id]),
        key="verdict",
    )
    if selected is not None:
        _render_detail(sessions, by_id[selected])


def _table_row(view: VerdictView) -> dict[str, object]:
    return {
        "verdict": view.id,
        "captured at": view.captured_at,
        "camera": view.camera_id,
        "frame": view.frame_id,
        "product": view.product,
        "score": round(view.score, 4),
        "threshold": round(view.threshold, 4),
        "positions": ", ".join(view.positions),
    }


def _label(view: VerdictView) -> str:
    return f"#{view.id} {view.camera_id}/{view.frame_id} ({view.product}, score {view.score:.3f})"


def _render_detail(sessions: sessionmaker[Session], view: VerdictView) -> None:
    with sessions() as session:
        image, mask = get_verdict_images(session=session, verdict_id=view.id)
    picture, facts = st.columns([3, 2])
    with picture:
        if image is None:
            st.info("This frame's image is not stored in the database.")
        else:
            try:
                shown = image if mask is None else overlay_mask(image, mask)
            except UnidentifiedImageError:
                st.warning("The stored image or mask cannot be decoded.")
            else:
                caption = "no mask" if mask is None else "defect mask in red"
                st.image(shown, caption=f"{view.camera_id}/{view.frame_id}: {caption}",
                         width=448)
    with facts:
        st.metric(
            "Score",
            f"{view.score:.3f}",
            delta=f"{view.score - view.threshold:+.3f} vs threshold {view.threshold:.3f}",
            delta_color="inverse",
        )
        st.markdown(f"**Positions:** {', '.join(view.positions) or 'none reported'}")
        if view.details:
            st.markdown("**Evidence:** " + ", ".join(
                f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                for key, value in view.details.items()
            ))
        st.markdown("**Answer**")
        st.markdown(view.answer)
        st.caption(
            f"model {view.model_id} · {view.worker} · {view.latency_ms:.0f} ms · "
            f"captured {view.captured_at:%Y-%m-%d %H:%M:%S %Z}"
        )


if __name__ == "__main__":
    main()
