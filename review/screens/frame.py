"""Frame: one flagged frame, its verdict, decisions, history and the chat about it.

The frame with its heatmap, mask contour and 3×3 grid; the verdict, its evidence and pool
version; the decisions; the history; and the chat about it.

The frame is chosen by ``?verdict=ID`` (so a link can be shared) or from the queue.
Keyboard: D / N / U decide, Z undoes a pool addition, J opens the next unreviewed frame,
Q goes back to the queue.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import UnidentifiedImageError

from review import auth, data, labels
from review.chat_panel import render_chat
from review.frame_actions import render_actions, show_flash
from review.overlay import compose_frame
from storage import repositories as repo

QUEUE_PAGE = Path(__file__).resolve().parent / "queue.py"
# Shown in their own words (pool version metric, calibration note), not in the evidence line.
HIDDEN_EVIDENCE = {"pool_version", "false_alarm_rate_checked", "global_bound"}


def selected_verdict() -> int | None:
    """The verdict id from ``?verdict=`` or, failing that, the one opened last."""
    raw = st.query_params.get("verdict")
    if raw is not None:
        try:
            return int(raw)
        except ValueError:
            return None
    chosen = st.session_state.get("verdict_id")
    return int(chosen) if chosen is not None else None


def open_verdict(verdict_id: int) -> None:
    """Show another frame on this page."""
    st.session_state.verdict_id = verdict_id
    st.query_params["verdict"] = str(verdict_id)
    st.rerun()


def render() -> None:
    """Draw the frame page."""
    user = auth.page_user()
    verdict_id = selected_verdict()
    if verdict_id is None:
        st.title("Frame")
        st.info("Open a frame from the queue.")
        _next_unreviewed_button()
        return
    try:
        with data.reading() as session:
            detail = repo.get_frame_detail(session=session, verdict_id=verdict_id)
    except repo.VerdictNotFoundError:
        st.title("Frame")
        st.error(f"There is no verdict {verdict_id}.")
        return
    st.session_state.verdict_id = verdict_id
    verdict = detail.verdict
    st.title(f"{verdict.camera_id} / {verdict.frame_id}")
    st.markdown(f"{verdict.product} · captured {labels.when(verdict.captured_at)} · "
                f"verdict #{verdict.id} {labels.status_badge(verdict.review_status)}")
    back, forward, _ = st.columns([1, 1.4, 4])
    if back.button("← Queue", key="to_queue", shortcut="q"):
        st.switch_page(QUEUE_PAGE)
    with forward:
        _next_unreviewed_button(exclude=verdict.id)

    picture, facts = st.columns([3, 2], gap="large")
    with picture:
        _picture(detail)
    with facts:
        _facts(detail)
        show_flash()
        render_actions(user, verdict)
    history, chat = st.columns([2, 3], gap="large")
    with history:
        st.subheader("History")
        _history(detail)
    with chat:
        st.subheader("Chat")
        render_chat(user, verdict.id, detail.chat)


def _picture(detail: repo.FrameDetail) -> None:
    images, verdict = detail.images, detail.verdict
    image, missing = data.frame_image(images)
    if image is None:
        st.info(missing)
        return
    has_map = images.heatmap_png is not None
    opacity_column, mask_column, grid_column = st.columns([3, 1, 1], vertical_alignment="bottom")
    opacity = opacity_column.slider("Heatmap opacity", 0.0, 1.0, 0.5 if has_map else 0.0, 0.05,
                                    key="opacity", disabled=not has_map)
    show_mask = mask_column.toggle("Mask", value=True, key="show_mask",
                                   disabled=images.mask_png is None)
    show_grid = grid_column.toggle("3×3 grid", value=True, key="show_grid")
    try:
        shown = compose_frame(image, heatmap_png=images.heatmap_png, opacity=opacity,
                              mask_png=images.mask_png if show_mask else None, grid=show_grid,
                              positions=verdict.positions)
    except (UnidentifiedImageError, OSError, ValueError):
        st.warning("The stored image, mask or heatmap cannot be decoded.")
        return
    st.image(shown, width="stretch")
    parts = []
    if has_map:
        low, high = images.heatmap_min, images.heatmap_max
        scale = (f" from {low:.3g} (blue) to {high:.3g} (red)"
                 if low is not None and high is not None else "")
        parts.append(f"anomaly heatmap{scale}")
    else:
        parts.append("no heatmap stored for this frame")
    parts.append("defect mask outlined in cyan" if images.mask_png is not None
                 else "no defect mask (the model flagged the frame as a whole)")
    if verdict.positions:
        parts.append(f"grid cells named by the model framed in yellow: "
                     f"{', '.join(verdict.positions)}")
    st.caption("; ".join(parts) + ".")


def _facts(detail: repo.FrameDetail) -> None:
    verdict = detail.verdict
    score, pool = st.columns(2)
    score.metric("Score", f"{verdict.score:.3f}",
                 delta=f"{verdict.score - verdict.threshold:+.3f} vs {verdict.threshold:.3f}",
                 help="The anomaly score against the product's threshold (above: flagged).",
                 delta_color="inverse")
    judged = detail.judged_pool_version
    pool.metric("Pool version", "?" if judged is None else str(judged),
                delta=None if judged is None or judged == detail.pool_version
                else f"now {detail.pool_version}", delta_color="off",
                help="The product's pool version this frame was judged with (and now).")
    st.markdown("**Answer**")
    st.markdown(verdict.answer or "_no answer_")
    evidence = {key: value for key, value in verdict.details.items()
                if key not in HIDDEN_EVIDENCE}
    positions = ", ".join(verdict.positions) or "none reported"
    st.markdown(f"**Positions:** {positions}")
    if evidence:
        st.markdown("**Evidence:** " + " · ".join(
            f"{key.replace('_', ' ')} {value:.4g}" if isinstance(value, float)
            else f"{key.replace('_', ' ')} {value}"
            for key, value in evidence.items()
        ))
    note = labels.calibration_note(verdict.details)
    if note is not None:
        checked, sentence = note
        (st.caption if checked else st.warning)(sentence)
    st.caption(f"model {verdict.model_id} · {verdict.worker} · {verdict.latency_ms:.0f} ms")


def _history(detail: repo.FrameDetail) -> None:
    verdict = detail.verdict
    st.markdown(f"- {labels.when(verdict.created_at)} · **{verdict.worker}** flagged it "
                f"(score {verdict.score:.3f})")
    for action in detail.actions:
        note = f" — {action.note}" if action.note else ""
        st.markdown(f"- {labels.when(action.created_at)} · **{action.actor}** "
                    f"{labels.action_words(action.action)}{note}")
    if detail.chat:
        asked = sum(1 for message in detail.chat if message.role == "user")
        st.caption(f"{asked} question(s) in the chat.")


def _next_unreviewed_button(exclude: int | None = None) -> None:
    if not st.button("Next unreviewed →", key="next_unreviewed", shortcut="j"):
        return
    with data.reading() as session:
        views = repo.list_queue(session=session, filters=repo.QueueFilter(review="unreviewed"),
                                limit=2)
    upcoming = [view.id for view in views if view.id != exclude]
    if upcoming:
        open_verdict(upcoming[0])
    st.info("No unreviewed flagged frames left.")


if __name__ == "__main__":
    render()
