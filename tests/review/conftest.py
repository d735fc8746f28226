"""Fixtures of the review tests: a seeded, migrated database and the dashboard under AppTest.

Seed: ``FLAGGED`` flagged frames and as many normal ones of product ``bottle`` on cameras
``cam-a``/``cam-b``, each flagged one with a 64×64 image, a mask and a stored heatmap; three
accounts — ``olga`` (operator), ``emil`` (engineer), ``ada`` (admin) — with ``PASSWORD``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from storage import repositories as repo
from storage.engine import make_engine, make_session_factory
from storage.migrate import upgrade
from tests.storage.factories import make_record

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = REPO_ROOT / "review" / "app.py"
PASSWORD = "correct horse battery"
USERS = {"olga": "operator", "emil": "engineer", "ada": "admin"}
FLAGGED = 6


def encode(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def frame_record(index: int, *, camera: str = "cam-a", anomalous: bool = True,
                 product: str = "bottle") -> repo.VerdictRecord:
    """A verdict with a textured 64×64 frame; flagged ones carry a mask and a heatmap."""
    rng = np.random.default_rng(index)
    image = rng.integers(60, 200, size=(64, 64, 3), dtype=np.uint8)
    heat = np.zeros((16, 16), dtype=np.uint8)
    heat[:5, :5] = 255  # hot top-left corner
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[4:20, 4:20] = 255
    return replace(
        make_record(index, anomalous=anomalous),
        camera_id=camera, product=product, image=encode(image),
        mask_png=encode(mask) if anomalous else None,
        heatmap_png=encode(heat) if anomalous else None,
        heatmap_min=0.01 if anomalous else None, heatmap_max=0.93 if anomalous else None,
        details={"local_score": 0.93, "global_score": 0.2, "pool_version": 1},
    )


def seed(url: str, records: list[repo.VerdictRecord], *, users: bool = True) -> None:
    """Store ``records`` (in batches) and, with ``users``, the three accounts."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            for start in range(0, len(records), 1000):
                repo.record_verdicts(session=session, records=records[start:start + 1000])
            if users:
                for name, role in USERS.items():
                    repo.create_user(session=session, name=name, password=PASSWORD, role=role,
                                     created_by="test")
    finally:
        engine.dispose()


def read(url: str, fn: Callable[..., object], **kwargs: object) -> object:
    """Call a repository function on ``url`` in a fresh session (to check what was stored)."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return fn(session=session, **kwargs)
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def _fresh_streamlit_caches() -> Iterator[None]:
    # Cached reads and engines are process-wide: one test's database must not leak into the next.
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def review_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite database with the seed; exported as AGPT_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'review.sqlite'}"
    upgrade(url)
    records = [frame_record(2 * i + 1, camera="cam-a" if i % 2 == 0 else "cam-b")
               for i in range(FLAGGED)]
    records += [frame_record(2 * i, anomalous=False) for i in range(FLAGGED)]
    seed(url, records)
    monkeypatch.setenv("AGPT_DATABASE_URL", url)
    monkeypatch.setenv("AGPT_ASSISTANT_URL", "http://127.0.0.1:9")  # nothing listens
    return url


@pytest.fixture
def app() -> Callable[..., AppTest]:
    """``app(user=None)``: the dashboard, logged in as ``user`` (a session claim) or not."""

    def build(user: str | None = None, role: str | None = None) -> AppTest:
        test = AppTest.from_file(str(APP), default_timeout=60)
        if user is not None:
            test.session_state["agpt_user"] = {"name": user, "role": role or USERS[user],
                                               "oidc": False}
        return test

    return build
