"""The chat about one frame: the stored dialogue, then a new question answered as it streams.

The question and the answer are stored together (with the user and the time) once the
answer is complete; a reply cut short by a failure is not stored, and the question stays on
screen with a clear message. The dialogue sent to the assistant is the stored one, so a
reopened frame continues where it was left.
"""

from __future__ import annotations

import streamlit as st

from review import data, labels
from review.assistant_client import (
    AssistantClient,
    AssistantUnavailableError,
    Turn,
    assistant_url,
)
from review.auth import CurrentUser
from storage import repositories as repo


@st.cache_data(ttl=5, show_spinner=False)
def assistant_state(url: str) -> str:
    """The assistant's health: ready, loading or down (cached for a few seconds)."""
    return AssistantClient(url).state(timeout_s=1.0)


def render_chat(user: CurrentUser, verdict_id: int,
                stored: list[repo.ChatMessageView]) -> None:
    """Show the stored chat about a verdict and answer a new question.

    Args:
        user: The logged-in user (stored as the question's author).
        verdict_id: The frame's verdict.
        stored: The chat so far, oldest first.
    """
    url = assistant_url()
    state = assistant_state(url)
    if state == "loading":
        st.info("The assistant is still loading its model; chat answers in a moment.",
                icon=":material/hourglass_top:")
    elif state == "down":
        st.warning(f"The assistant at {url} is not answering, so chat is unavailable for now. "
                   "Reviewing, the heatmap and the pool still work.", icon=":material/cloud_off:")
    if not stored:
        st.caption("No chat about this frame yet. Ask where the defect is, why it was "
                   "flagged, or how it compares with the pool.")
    for message in stored:
        with st.chat_message(message.role):
            st.markdown(message.text)
            who = message.author or ("assistant" if message.role == "assistant" else "")
            st.caption(f"{who} · {labels.when(message.created_at)}")
    fresh = st.container()  # the new exchange goes above the input box
    question = st.chat_input("Ask about this frame", key=f"chat_{verdict_id}", max_chars=2000)
    if not question or not question.strip():
        return
    question = question.strip()
    with fresh:
        _exchange(user, verdict_id, url, stored, question)


def _exchange(user: CurrentUser, verdict_id: int, url: str,
              stored: list[repo.ChatMessageView], question: str) -> None:
    with st.chat_message("user"):
        st.markdown(question)
        st.caption(f"{user.name} · now")
    turns = [Turn(message.role, message.text) for message in stored] + [Turn("user", question)]
    with st.chat_message("assistant"):
        try:
            answer = st.write_stream(AssistantClient(url).stream_reply(verdict_id=verdict_id,
                                                                       turns=turns))
        except AssistantUnavailableError as exc:
            assistant_state.clear()
            st.warning(f"No answer: {exc}. Your question was not saved; ask again later.")
            return
    text = answer if isinstance(answer, str) else "".join(map(str, answer))
    try:
        with data.writing() as session:
            repo.record_chat_turn(session=session, verdict_id=verdict_id, user=user.name,
                                  question=question, answer=text)
    except repo.PermissionDeniedError as exc:
        st.error(f"Refused: {exc}")
