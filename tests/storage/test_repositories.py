"""storage.repositories exposes the agreed keyword-only API; storage imports nothing of ours."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import storage.repositories as repositories

FUNCTIONS = [
    "record_verdicts",
    "count_verdicts",
    "list_verdicts",
    "get_verdict_images",
    "add_pool_entry",
    "list_pool_images",
    "pool_products",
    "deactivate_pool_entry",
    "pool_version",
    "list_pool_entries",
    "get_pool_entry",
    "record_review_action",
    "add_chat_message",
    "list_chat_messages",
    "list_review_actions",
]
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_are_keyword_only_and_take_a_session(name: str) -> None:
    parameters = inspect.signature(getattr(repositories, name)).parameters

    assert "session" in parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())


def test_everything_exported_exists() -> None:
    assert set(FUNCTIONS) <= set(repositories.__all__)
    for name in repositories.__all__:
        assert hasattr(repositories, name)


def test_storage_imports_nothing_else_of_ours() -> None:
    code = (
        "import sys, storage.repositories, storage.engine, storage.migrate; "
        "ours = ('agpt', 'ingest', 'inference', 'review'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ours))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
