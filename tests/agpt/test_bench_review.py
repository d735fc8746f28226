"""`agpt bench review` at toy sizes: the report has every figure, side by side."""

from __future__ import annotations

import pytest

from agpt.bench.review import bench_review
from agpt.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_bench_review_reports_render_and_first_token(postgres_admin_url, model_cache_dir):
    report = bench_review(Settings(cache_dir=model_cache_dir, torch_threads=1), verdicts=300,
                          small=100, repeats=1, questions=1, admin_url=postgres_admin_url,
                          keep=False)

    for size in (100, 300):
        render = report[f"queue_at_{size}"]
        assert 0 < render["queue_queries_median_s"] < render["first_render_s"]
    chat = report["chat"]
    assert chat["endpoint"]["first_token_median_s"] > 0
    assert chat["endpoint"]["chunks_median"] > 1
    assert chat["in_process"]["first_token_median_s"] > 0
    assert "meets_target" in chat
