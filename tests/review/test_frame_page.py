"""Frame page under AppTest: the picture and facts, the decisions with audit rows, the
server-side refusal, undo, and the chat stored and restored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from streamlit.testing.v1 import AppTest

from storage import repositories as repo
from tests.review.conftest import frame_record, read, seed
from tests.review.stub_assistant import REPLY_PIECES, stub_assistant


def _newest(url: str) -> repo.VerdictView:
    return read(url, repo.list_queue, limit=1)[0]  # type: ignore[index]


def _open(app: Callable[..., AppTest], user: str, verdict_id: int, **claims: str) -> AppTest:
    test = app(user, **claims)
    test.run()
    test.switch_page("screens/frame.py")
    test.query_params["verdict"] = str(verdict_id)
    return test.run()


def _text(test: AppTest) -> str:
    return "\n".join(str(e.value) for e in (*test.markdown, *test.caption, *test.title,
                                             *test.success, *test.info, *test.warning,
                                             *test.error))


def _actions(url: str, verdict_id: int) -> list[tuple[str, str]]:
    rows = read(url, repo.list_review_actions, verdict_id=verdict_id)
    return [(row.action, row.actor) for row in rows]  # type: ignore[attr-defined]


def test_frame_shows_heatmap_mask_grid_score_answer_evidence_and_pool_version(
    review_url: str, app: Callable[..., AppTest]
) -> None:
    verdict = _newest(review_url)

    test = _open(app, "olga", verdict.id)

    assert not test.exception
    assert test.title[0].value == "cam-b / f-11"
    text = _text(test)
    assert "anomaly heatmap from 0.01 (blue) to 0.93 (red)" in text
    assert "defect mask outlined in cyan" in text
    assert "framed in yellow: top left" in text
    assert "Yes: frame 11 has a defect." in text
    assert "local score 0.93" in text
    metrics = {m.label: m for m in test.metric}
    assert metrics["Score"].value == "0.900"
    assert metrics["Score"].delta == "+0.400 vs 0.500"
    assert metrics["Pool version"].value == "1"
    assert test.slider(key="opacity").value == 0.5
    assert len(test.image) == 1
    assert "flagged it" in text  # history starts with the verdict
    # An operator sees "Not a defect" without the pool; no undo offered.
    labels = [button.label for button in test.button]
    assert "Not a defect" in labels
    assert "Not a defect — add to pool" not in labels

    test.slider(key="opacity").set_value(0.0).run()
    test.toggle(key="show_grid").set_value(False).run()
    assert not test.exception
    assert len(test.image) == 1


def test_each_decision_is_an_audit_row_with_the_acting_user(
    review_url: str, app: Callable[..., AppTest]
) -> None:
    verdict = _newest(review_url)
    test = _open(app, "olga", verdict.id)

    test.text_input(key=f"note_{verdict.id}").input("scratch near the cap")
    test.button(key="act_defect").click().run()

    assert any("Saved: defect confirmed (by olga)" in s.value for s in test.success)
    assert _actions(review_url, verdict.id) == [("confirm_defect", "olga")]
    assert any(":red-badge[defect confirmed]" in m.value for m in test.markdown)
    assert "**olga** confirmed the defect — scratch near the cap" in _text(test)

    test.button(key="act_unsure").click().run()
    test.button(key="act_normal").click().run()

    assert _actions(review_url, verdict.id) == [
        ("confirm_defect", "olga"), ("unsure", "olga"), ("not_defect", "olga")]
    stored = read(review_url, repo.get_verdict, verdict_id=verdict.id)
    assert stored.review_status == "normal"  # type: ignore[attr-defined]
    assert stored.reviewed_by == "olga"  # type: ignore[attr-defined]
    assert read(review_url, repo.pool_version, product="bottle") == 0  # no pool change


def test_engineer_adds_to_pool_then_undoes(review_url: str, app: Callable[..., AppTest],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = _newest(review_url)
    with stub_assistant() as assistant:
        monkeypatch.setenv("AGPT_ASSISTANT_URL",
                           f"http://127.0.0.1:{assistant.server_address[1]}")
        test = _open(app, "emil", verdict.id)
        test.button(key="act_normal_pool").click().run()

        assert not test.exception
        assert any("added to the bottle pool" in s.value and "pool version 1" in s.value
                   for s in test.success)
        entries = read(review_url, repo.list_pool_entries, product="bottle")
        assert [(e.added_by, e.active) for e in entries] == [("emil", True)]  # type: ignore[attr-defined]
        assert read(review_url, repo.pool_version, product="bottle") == 1
        assert _actions(review_url, verdict.id) == [("not_defect+add_to_pool", "emil")]

        test.button(key="act_undo").click().run()

        assert any("Undone" in s.value and "pool version 2" in s.value for s in test.success)
        assert assistant.announcements == 2  # after the add and after the undo
    entries = read(review_url, repo.list_pool_entries, product="bottle", include_inactive=True)
    assert [(e.active, e.deactivated_by) for e in entries] == [(False, "emil")]  # type: ignore[attr-defined]
    changes = read(review_url, repo.list_pool_changes, product="bottle")
    assert [(c.version, c.action, c.actor) for c in changes] == [  # type: ignore[attr-defined]
        (2, "remove", "emil"), (1, "add", "emil")]
    assert _actions(review_url, verdict.id) == [("not_defect+add_to_pool", "emil"),
                                                ("undo_add_to_pool", "emil")]
    assert "act_undo" not in [button.key for button in test.button]


def test_operator_with_a_forged_engineer_session_is_refused_by_the_server(
    review_url: str, app: Callable[..., AppTest]
) -> None:
    # The session claims "engineer" (e.g. demoted after login, or tampered): the button shows,
    # but the storage function checks olga's role in the database and refuses.
    verdict = _newest(review_url)
    test = _open(app, "olga", verdict.id, role="engineer")

    test.button(key="act_normal_pool").click().run()

    assert any("Refused: user 'olga' is operator; this needs engineer" in e.value
               for e in test.error)
    assert read(review_url, repo.list_pool_entries, product="bottle") == []
    assert read(review_url, repo.pool_version, product="bottle") == 0
    assert _actions(review_url, verdict.id) == []


def test_chat_streams_is_stored_with_the_user_and_restored(
    review_url: str, app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    verdict = _newest(review_url)
    with stub_assistant() as assistant:
        monkeypatch.setenv("AGPT_ASSISTANT_URL",
                           f"http://127.0.0.1:{assistant.server_address[1]}")
        test = _open(app, "olga", verdict.id)
        assert not test.warning  # the assistant is up

        test.chat_input(key=f"chat_{verdict.id}").set_value("Where is the defect?").run()

        assert not test.exception
        reply = "".join(REPLY_PIECES)
        assert reply in _text(test)
        assert assistant.requests[-1] == {
            "verdict_id": verdict.id,
            "messages": [{"role": "user", "text": "Where is the defect?"}]}

        stored = read(review_url, repo.list_chat_messages, verdict_id=verdict.id)
        assert [(m.role, m.text, m.author) for m in stored] == [  # type: ignore[attr-defined]
            ("user", "Where is the defect?", "olga"), ("assistant", reply, "assistant")]

        # Reopened by another user later: the dialogue is back, and continues from it.
        again = _open(app, "emil", verdict.id)
        shown = [block.markdown[0].value for block in again.chat_message]
        assert shown == ["Where is the defect?", reply]
        again.chat_input(key=f"chat_{verdict.id}").set_value("How sure are you?").run()
        assert [m["text"] for m in assistant.requests[-1]["messages"]] == [  # type: ignore[index]
            "Where is the defect?", reply, "How sure are you?"]


def test_assistant_down_is_said_clearly_and_reviewing_still_works(
    review_url: str, app: Callable[..., AppTest]
) -> None:
    verdict = _newest(review_url)
    test = _open(app, "olga", verdict.id)  # AGPT_ASSISTANT_URL points at a closed port

    assert any("is not answering, so chat is unavailable" in w.value for w in test.warning)

    test.chat_input(key=f"chat_{verdict.id}").set_value("Anyone there?").run()
    assert any("No answer" in w.value and "not saved" in w.value for w in test.warning)
    assert read(review_url, repo.list_chat_messages, verdict_id=verdict.id) == []

    test.button(key="act_defect").click().run()
    assert _actions(review_url, verdict.id) == [("confirm_defect", "olga")]


def test_unknown_verdict_and_no_selection(review_url: str,
                                          app: Callable[..., AppTest]) -> None:
    test = _open(app, "olga", 999_999)
    assert any("There is no verdict 999999" in e.value for e in test.error)

    test = app("olga").run()
    test.switch_page("screens/frame.py").run()
    assert any("Open a frame from the queue" in i.value for i in test.info)
    test.button(key="next_unreviewed").click().run()
    assert test.title[0].value == "cam-b / f-11"


@pytest.mark.parametrize(("references", "checked", "bound", "expected", "warned"), [
    (1, False, None,
     "Threshold estimated from 1 reference; false-alarm rate (1 %) not verifiable", True),
    (6, True, "stream", "Threshold calibrated on 6 references for 1 % false alarms", False),
    (6, True, "references", "image-level check still rests on the references alone", True),
])
def test_frame_says_whether_the_threshold_false_alarm_rate_could_be_checked(
    review_url: str, app: Callable[..., AppTest], references: int, checked: bool,
    bound: str | None, expected: str, warned: bool,
) -> None:
    details = {"local_score": 0.93, "references": references, "false_alarm_rate": 0.01,
               "false_alarm_rate_checked": checked, "pool_version": 1}
    if bound is not None:
        details["global_bound"] = bound
    seed(review_url, [replace(frame_record(99), details=details)], users=False)
    verdict = _newest(review_url)
    assert verdict.frame_id == "f-99"

    test = _open(app, "olga", verdict.id)

    assert not test.exception
    assert expected in _text(test)
    assert any(expected in str(w.value) for w in test.warning) is warned
    assert "false alarm rate checked" not in _text(test)  # said in words, not as a raw flag


def test_frame_without_calibration_evidence_shows_no_calibration_note(
    review_url: str, app: Callable[..., AppTest]
) -> None:
    test = _open(app, "olga", _newest(review_url).id)

    assert not test.exception
    assert "false-alarm rate" not in _text(test)
    assert "Threshold calibrated" not in _text(test)
