"""Pool page under AppTest: upload (validated), remove, restore, history; operators refused."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from storage import repositories as repo
from tests.review.conftest import read


def _png(seed_value: int = 0, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed_value)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def pooled_url(review_url: str) -> str:
    """The review seed plus two references in the bottle pool, added by emil."""
    from storage.engine import make_engine, make_session_factory

    engine = make_engine(review_url)
    try:
        with make_session_factory(engine).begin() as session:
            for i in range(2):
                repo.pool_add(session=session, user="emil", product="bottle", image=_png(i))
    finally:
        engine.dispose()
    return review_url


def _open(app: Callable[..., AppTest], user: str, **claims: str) -> AppTest:
    test = app(user, **claims).run()
    test.switch_page("screens/pool.py")
    return test.run()


def _entries(url: str) -> list[tuple[int, bool, str | None]]:
    rows = read(url, repo.list_pool_entries, product="bottle", include_inactive=True)
    return [(e.id, e.active, e.deactivated_by) for e in rows]  # type: ignore[attr-defined]


def test_engineer_sees_thumbnails_removes_and_restores(pooled_url: str,
                                                       app: Callable[..., AppTest]) -> None:
    test = _open(app, "emil")

    assert not test.exception
    metrics = {m.label: m.value for m in test.metric}
    assert metrics == {"Pool version": "2", "References": "2", "Removed": "0"}
    assert len(test.image) == 2
    first = _entries(pooled_url)[0][0]

    test.button(key=f"pool_remove_{first}").click().run()

    assert any(f"Removed entry #{first}: bottle pool version 3" in s.value for s in test.success)
    assert _entries(pooled_url)[0] == (first, False, "emil")
    assert {m.label: m.value for m in test.metric}["Removed"] == "1"

    test.button(key=f"pool_restore_{first}").click().run()

    assert _entries(pooled_url)[0] == (first, True, None)
    history = test.dataframe[0].value
    assert list(history["version"]) == [4, 3, 2, 1]
    assert list(history["change"]) == ["restore", "remove", "add", "add"]
    assert set(history["by"]) == {"emil"}


def test_upload_is_validated_and_added(pooled_url: str, app: Callable[..., AppTest]) -> None:
    test = _open(app, "emil")

    test.file_uploader(key="pool_files").set_value([
        ("good.png", _png(7), "image/png"),
        ("good.jpg", _png(8, "JPEG"), "image/jpeg"),
        ("evil.png", b"<script>alert(1)</script>", "image/png"),
    ])
    test.text_input(key="pool_note").input("new lot")
    test.button[[b.label for b in test.button].index("Add to pool")].click().run()

    assert not test.exception
    assert any("evil.png: the file is not a readable PNG or JPEG image" in e.value
               for e in test.error)
    assert any("Added 2 reference(s) to the bottle pool, version 4" in s.value
               for s in test.success)
    changes = read(pooled_url, repo.list_pool_changes, product="bottle")
    assert [(c.version, c.action, c.actor, c.note) for c in changes][:2] == [  # type: ignore[attr-defined]
        (4, "add", "emil", "new lot"), (3, "add", "emil", "new lot")]


def test_operator_sees_no_pool_controls_and_a_forged_session_is_refused(
    pooled_url: str, app: Callable[..., AppTest]
) -> None:
    test = _open(app, "olga")
    first = _entries(pooled_url)[0][0]

    assert not test.exception
    assert f"pool_remove_{first}" not in [b.key for b in test.button]
    assert not test.file_uploader
    assert any("engineers and admins change it" in c.value for c in test.caption)

    # A session that claims "engineer" gets the buttons; the server still refuses olga.
    forged = _open(app, "olga", role="engineer")
    forged.button(key=f"pool_remove_{first}").click().run()

    assert any("Refused: user 'olga' is operator; this needs engineer" in e.value
               for e in forged.error)
    assert _entries(pooled_url)[0] == (first, True, None)
    assert read(pooled_url, repo.pool_version, product="bottle") == 2
