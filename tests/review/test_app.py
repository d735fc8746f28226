"""The review page, run by Streamlit's AppTest against a seeded SQLite database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage.engine import make_engine, make_session_factory
from storage.migrate import upgrade
from storage.repositories import list_verdicts, record_verdicts
from tests.storage.factories import make_record

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = REPO_ROOT / "review" / "app.py"


@pytest.fixture
def seeded_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite file with 6 frames, 3 of them flagged; exported as AGPT_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'review.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            records = [make_record(i) for i in range(6)]
            records[5] = make_record(5, image=None, image_uri="s3://frames/f-5.png")
            record_verdicts(session=session, records=records)
            session.commit()
    finally:
        engine.dispose()
    monkeypatch.setenv("AGPT_DATABASE_URL", url)
    return url


def _flagged_ids(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            views = list_verdicts(session=session, anomalous=True)
    finally:
        engine.dispose()
    return {view.frame_id: view.id for view in views}


def _markdown(app: AppTest) -> str:
    return "\n".join(str(element.value) for element in app.markdown)


def test_lists_flagged_frames_and_shows_the_selected_answer(seeded_url: str) -> None:
    app = AppTest.from_file(str(APP), default_timeout=60).run()

    assert not app.exception
    assert [metric.value for metric in app.metric[:2]] == ["6", "3"]
    table = app.dataframe[0].value
    assert list(table["frame"]) == ["f-5", "f-3", "f-1"]
    select = app.selectbox(key="verdict")
    frames = [option.split(" ")[1] for option in select.options]
    assert frames == ["cam-a/f-5", "cam-a/f-3", "cam-a/f-1"]
    # The newest flagged frame is selected first; its image is stored elsewhere.
    assert "Yes: frame 5 has a defect." in _markdown(app)
    assert any("not stored" in info.value for info in app.info)

    app = select.set_value(_flagged_ids(seeded_url)["f-3"]).run()

    assert not app.exception
    assert "Yes: frame 3 has a defect." in _markdown(app)
    assert "Yes: frame 5 has a defect." not in _markdown(app)
    assert "top left" in _markdown(app)
    assert app.metric[2].value == "0.900"


def test_empty_database_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    upgrade(url)
    monkeypatch.setenv("AGPT_DATABASE_URL", url)

    app = AppTest.from_file(str(APP), default_timeout=60).run()

    assert not app.exception
    assert [metric.value for metric in app.metric] == ["0", "0"]
    assert any("No flagged frames" in info.value for info in app.info)


def test_unmigrated_database_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGPT_DATABASE_URL", f"sqlite:///{tmp_path / 'new.sqlite'}")

    app = AppTest.from_file(str(APP), default_timeout=60).run()

    assert any("is it migrated?" in error.value for error in app.error)


def test_review_never_imports_torch_or_kafka() -> None:
    code = (
        "import sys, review.app, review.overlay; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kafka')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
