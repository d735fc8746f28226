"""The dashboard as a whole: a database it cannot use is reported; no torch or Kafka inside."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage.migrate import upgrade

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_unmigrated_database_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         app: Callable[..., AppTest]) -> None:
    monkeypatch.setenv("AGPT_DATABASE_URL", f"sqlite:///{tmp_path / 'new.sqlite'}")

    test = app().run()

    assert any("is it migrated? run `agpt db upgrade`" in error.value for error in test.error)
    assert not test.text_input  # no login form on a broken database


def test_empty_database_shows_an_empty_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             app: Callable[..., AppTest]) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    upgrade(url)
    monkeypatch.setenv("AGPT_DATABASE_URL", url)

    test = app("olga").run()

    assert not test.exception
    assert [metric.value for metric in test.metric] == ["0", "0"]
    assert any("No frames match" in info.value for info in test.info)


def test_review_never_imports_torch_or_kafka() -> None:
    pages = sorted(p.stem for p in (REPO_ROOT / "review" / "screens").glob("[!_]*.py"))
    code = (
        "import sys, runpy, review.app, review.auth, review.data, review.chat_panel, "
        "review.frame_actions, review.overlay, review.uploads, review.assistant_client, "
        "review.worker_metrics, review.labels; "
        + "".join(f"import review.screens.{page}; " for page in pages)
        + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kafka')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )

    assert pages == ["frame", "overview", "pool", "queue", "users"]
    assert result.stdout.strip().splitlines()[-1] == "[]"
