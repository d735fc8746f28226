"""`agpt bench model --random-weights` at tiny size on the CPU (the GPU run uses the same code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agpt.bench.gpu_anomalygpt import summarise
from agpt.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def test_random_weights_bench_reports_every_batch_size_and_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    status = main(["bench", "model", "--profile", "anomalygpt-7b", "--random-weights",
                   "--device", "cpu", "--scale", "tiny", "--batch-sizes", "4,1",
                   "--new-tokens", "3", "--repeats", "1", "--json", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert [row["batch"] for row in report["batches"]] == [1, 4]
    for row in report["batches"]:
        assert row["detection_fps"] > 0
        assert row["verdict_fps"] > 0
        assert row["verdict_fps"] == pytest.approx(row["batch"] / (row["verdict_ms"] / 1e3))
    assert report["baseline"]["new_tokens"] == 3
    summary = report["summary"]
    assert summary["verdict_fps"] == max(row["verdict_fps"] for row in report["batches"])
    assert summary["speedup"] == pytest.approx(summary["verdict_fps"] / summary["baseline_fps"])
    assert "met" not in summary  # targets are for the full size only


def test_summary_checks_the_targets_of_the_full_size() -> None:
    report = {
        "scale": "full",
        "baseline": {"fps": 4.0},
        "batches": [
            {"batch": 1, "detection_fps": 90.0, "verdict_fps": 20.0, "peak_gib": 15.5},
            {"batch": 256, "detection_fps": 1600.0, "verdict_fps": 420.0, "peak_gib": 40.0},
            {"batch": 512, "error": "out of memory"},
        ],
    }
    summary = summarise(report)
    assert summary["detection_batch"] == 256
    assert summary["speedup"] == pytest.approx(105.0)
    assert summary["met"] == {"detection_fps": True, "verdict_fps": False, "speedup": True,
                              "batch_1_peak_gib": True}
