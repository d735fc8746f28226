"""The decisions on a frame — Confirm defect, Not a defect (add to pool), Unsure — and undo.

Each button calls the storage function that checks the user's role in the database and
writes the review-log row (and, for "add to pool", the pool entry and its change-log row) in
one transaction; a refusal is shown, never hidden. After a pool change the assistant service
is asked to announce it on the pool topic so running workers reload before their next batch.
"""

from __future__ import annotations

import streamlit as st

from review import data
from review.assistant_client import (
    AssistantUnavailableError,
    announce_pool_changes,
    assistant_url,
)
from review.auth import CurrentUser
from storage import repositories as repo

FLASH_KEY = "frame_flash"
UNDO_KEY = "frame_undo"


def flash(kind: str, text: str) -> None:
    """Keep a message to show after the next rerun (``kind``: success, info, warning, error)."""
    st.session_state.setdefault(FLASH_KEY, []).append((kind, text))


def show_flash() -> None:
    """Show and forget the messages kept by :func:`flash`."""
    for kind, text in st.session_state.pop(FLASH_KEY, []):
        getattr(st, kind)(text)


def render_actions(user: CurrentUser, verdict: repo.VerdictView) -> None:
    """The decision buttons (keyboard: D, N, U; Z undoes a pool addition).

    Args:
        user: The logged-in user (their role only decides which buttons are shown).
        verdict: The frame's verdict.
    """
    st.markdown("**Decision** " + ("" if verdict.review_status is None
                                   else f"(now: {verdict.review_status} by {verdict.reviewed_by})"))
    note = st.text_input("Note (optional)", key=f"note_{verdict.id}", max_chars=500)
    if st.button("Confirm defect", key="act_defect", shortcut="d", type="primary",
                     icon=":material/report:", width="stretch"):
        _decide(user, verdict, "defect", note)
    if user.may("engineer"):
        if st.button("Not a defect — add to pool", key="act_normal_pool", shortcut="n",
                         icon=":material/add_photo_alternate:", width="stretch"):
            _decide(user, verdict, "normal", note, add_to_pool=True)
    elif st.button("Not a defect", key="act_normal", shortcut="n",
                       icon=":material/check_circle:", width="stretch",
                       help="Engineers also add the frame to the product's pool."):
        _decide(user, verdict, "normal", note)
    if st.button("Unsure", key="act_unsure", shortcut="u", icon=":material/help:",
                     width="stretch"):
        _decide(user, verdict, "unsure", note)
    _undo(user, verdict)


def _decide(user: CurrentUser, verdict: repo.VerdictView, decision: str, note: str, *,
            add_to_pool: bool = False) -> None:
    # An image kept in the blob store is read here: the pool keeps its own copy.
    image = None
    if add_to_pool and verdict.image_uri is not None:
        image = data.frame_image(repo.VerdictImages(None, verdict.image_uri, None))[0]
    try:
        with data.writing() as session:
            outcome = repo.review_verdict(session=session, verdict_id=verdict.id, user=user.name,
                                          decision=decision, note=note.strip(),
                                          add_to_pool=add_to_pool, image=image)
    except repo.PermissionDeniedError as exc:
        st.error(f"Refused: {exc}")
        return
    except (repo.ImageUnavailableError, repo.VerdictNotFoundError, ValueError) as exc:
        st.error(f"Not saved: {exc}")
        return
    data.after_write()
    change = outcome.pool_change
    if change is None:
        flash("success", f"Saved: {_decision_words(decision)} (by {user.name}).")
    else:
        st.session_state[UNDO_KEY] = {"verdict_id": verdict.id, "entry_id": change.entry_id,
                                      "product": change.product}
        flash("success", f"Saved: not a defect; added to the {change.product} pool as entry "
              f"#{change.entry_id}, pool version {change.version}. {announce_message()}")
    st.rerun()


def _undo(user: CurrentUser, verdict: repo.VerdictView) -> None:
    pending = st.session_state.get(UNDO_KEY)
    if not pending or pending.get("verdict_id") != verdict.id:
        return
    if not st.button(f"Undo: remove entry #{pending['entry_id']} from the pool again",
                     key="act_undo", shortcut="z", icon=":material/undo:"):
        return
    try:
        with data.writing() as session:
            change = repo.undo_pool_add(session=session, verdict_id=verdict.id, user=user.name,
                                        entry_id=int(pending["entry_id"]))
    except repo.PermissionDeniedError as exc:
        st.error(f"Refused: {exc}")
        return
    except repo.NotFoundError as exc:
        st.error(f"Not undone: {exc}")
        return
    st.session_state.pop(UNDO_KEY, None)
    data.after_write()
    if change is None:
        flash("info", f"Entry #{pending['entry_id']} had already been removed.")
    else:
        flash("success", f"Undone: entry #{change.entry_id} removed from the {change.product} "
              f"pool, pool version {change.version}. {announce_message()}")
    st.rerun()


def announce_message() -> str:
    """Ask the assistant service to announce saved pool changes; a sentence for the user."""
    try:
        announced = announce_pool_changes(assistant_url())
    except AssistantUnavailableError:
        return ("The workers are told when the assistant service is reachable again "
                "(the change is saved).")
    if not announced:
        return "Announced to the workers."
    versions = ", ".join(f"{product} v{version}" for product, version in announced.items())
    return f"Announced to the workers ({versions})."


def _decision_words(decision: str) -> str:
    return {"defect": "defect confirmed", "normal": "not a defect",
            "unsure": "unsure"}.get(decision, decision)
