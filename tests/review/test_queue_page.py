"""Queue page under AppTest: flagged frames newest first, filters, thumbnails, paging in SQL."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, timedelta

import pytest
from sqlalchemy import Engine, event
from streamlit.testing.v1 import AppTest

from storage import repositories as repo
from tests.review.conftest import FLAGGED, frame_record, read, seed


def _rows(test: AppTest) -> list[str]:
    """The "camera / frame" headline of each row, in page order."""
    return [m.value.split("**")[1] for m in test.markdown
            if re.match(r"\*\*cam-[ab] / f-\d+\*\*", m.value)]


def test_flagged_frames_newest_first_with_counts_and_thumbnails(
    review_url: str, app: Callable[..., AppTest]
) -> None:
    test = app("olga").run()

    assert not test.exception
    assert test.title[0].value == "Queue"
    metrics = {metric.label: metric.value for metric in test.metric}
    assert metrics == {"Unreviewed flagged frames": str(FLAGGED),
                       "Matching the filters": str(FLAGGED)}
    # Flagged frames are the odd indices; the newest (highest index) first.
    assert _rows(test) == ["cam-b / f-11", "cam-a / f-9", "cam-b / f-7", "cam-a / f-5",
                           "cam-b / f-3", "cam-a / f-1"]
    assert len(test.image) == FLAGGED  # a thumbnail per row
    opens = [b for b in test.button if b.label == "Open"]
    assert [b.proto.shortcut for b in opens[:2]] == ["1", "2"]  # keys 1-9 open rows


def test_counts_above_the_cap_read_as_more_than_it(
    review_url: str, app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    from review import data

    monkeypatch.setattr(data, "COUNT_CAP", FLAGGED - 2)
    test = app("olga").run()

    assert not test.exception
    cap = f"{FLAGGED - 2}+"
    assert {m.label: m.value for m in test.metric} == {"Unreviewed flagged frames": cap,
                                                       "Matching the filters": cap}
    assert any("Page **1** of **1+**" in m.value for m in test.markdown)
    assert len(_rows(test)) == FLAGGED  # the page itself is not capped
    assert test.button(key="next_top").disabled  # a short page is the last one


def test_filters_camera_and_review_status(review_url: str, app: Callable[..., AppTest]) -> None:
    newest = read(review_url, repo.list_queue, limit=1)[0]  # type: ignore[index]
    test = app("olga").run()

    test.sidebar.multiselect(key="f_cameras").set_value(["cam-a"]).run()
    assert _rows(test) == ["cam-a / f-9", "cam-a / f-5", "cam-a / f-1"]

    test.sidebar.multiselect(key="f_cameras").set_value([]).run()
    test.button(key=f"open_{newest.id}").click().run()  # opens the frame page
    assert test.title[0].value == "cam-b / f-11"
    test.button(key="act_unsure").click().run()
    test.switch_page("screens/queue.py").run()
    test.sidebar.selectbox(key="f_review").set_value("unreviewed").run()

    assert "cam-b / f-11" not in _rows(test)
    assert {m.label: m.value for m in test.metric}["Unreviewed flagged frames"] == str(
        FLAGGED - 1)
    test.sidebar.selectbox(key="f_review").set_value("unsure").run()
    assert _rows(test) == ["cam-b / f-11"]
    assert any(":gray-badge[unsure]" in m.value for m in test.markdown)


def test_score_filter(review_url: str, app: Callable[..., AppTest]) -> None:
    test = app("olga").run()

    test.sidebar.number_input(key="f_score_min").set_value(0.95).run()

    assert _rows(test) == []
    assert any("No frames match" in info.value for info in test.info)


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine of this process runs during the test."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


def test_paging_with_10000_verdicts_reads_one_page_at_a_time(
    database_url: str, app: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch,
    statements: list[str],
) -> None:
    template = frame_record(0)  # one image, mask and heatmap shared by all: seeding stays quick
    records = [replace(template, frame_id=f"f-{i}", camera_id=f"cam-{'ab'[i % 2]}",
                       captured_at=template.captured_at + timedelta(seconds=i))
               for i in range(10_000)]
    seed(database_url, records)
    monkeypatch.setenv("AGPT_DATABASE_URL", database_url)
    test = app("olga").run()

    assert not test.exception
    assert {m.label: m.value for m in test.metric}["Matching the filters"] == "10,000"
    assert any("Page **1** of **400**" in m.value for m in test.markdown)
    first = _rows(test)
    assert len(first) == 25
    assert first[0].endswith("f-9999")

    test.button(key="next_top").click().run()
    second = _rows(test)
    assert any("Page **2** of **400**" in m.value for m in test.markdown)
    assert len(second) == 25
    assert second[0].endswith("f-9974")
    assert not set(first) & set(second)

    # Every read of verdict rows was paged in the database; none loaded the table.
    row_reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")
                 and "FROM verdicts" in s and "count(" not in s.lower()
                 and "max(" not in s.lower()]
    assert row_reads
    for statement in row_reads:
        assert "LIMIT" in statement.upper() or "verdicts.id IN" in statement \
            or "verdicts.id =" in statement, statement


def test_time_filter(review_url: str, app: Callable[..., AppTest]) -> None:
    test = app("olga").run()

    test.sidebar.selectbox(key="f_time").set_value("Last hour").run()
    assert len(_rows(test)) == FLAGGED  # just judged

    test.sidebar.selectbox(key="f_time").set_value("Custom dates").run()
    test.sidebar.date_input(key="f_dates").set_value((date(2020, 1, 1), date(2020, 1, 31))).run()
    assert _rows(test) == []
