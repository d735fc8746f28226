"""`agpt bench storage` at toy sizes: every figure present, the scratch database dropped."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from agpt.bench.storage import bench_storage

pytestmark = pytest.mark.postgres


def _bench_databases(admin_url: str) -> set[str]:
    engine = create_engine(admin_url)
    try:
        with engine.connect() as connection:
            return set(connection.scalars(text(
                "SELECT datname FROM pg_database WHERE datname LIKE 'agpt_bench_storage_%'")))
    finally:
        engine.dispose()


def test_toy_run_reports_every_size_and_drops_its_database(postgres_admin_url: str) -> None:
    before = _bench_databases(postgres_admin_url)

    report = bench_storage(admin_url=postgres_admin_url, sizes=(300, 3000), calls=3,
                           insert_batches=3)

    assert [size["verdicts"] for size in report["sizes"]] == [300, 3000]
    for size in report["sizes"]:
        assert size["record_verdicts_rows_per_s"] > 0
        assert set(size["queries"]) == {
            "queue_first_page", "queue_unreviewed", "queue_filtered",
            "queue_keyset_random_depth", "queue_counts", "frame_recent", "frame_any_age",
            "overview_24h"}
        assert all(q["p95_ms"] >= q["p50_ms"] > 0 for q in size["queries"].values())
    assert "queue_first_page_p95" in report["ratios_largest_over_smallest"]
    assert _bench_databases(postgres_admin_url) <= before
