"""`agpt bench model` measures the stream memory on and off in the same run."""

import pytest

from agpt.bench.model import bench_model
from agpt.settings import Settings

pytestmark = pytest.mark.slow


def test_bench_model_reports_the_stream_memory_on_and_off(model_cache_dir, one_torch_thread):
    settings = Settings(cache_dir=model_cache_dir, stream_window=4, torch_threads=1)
    report = bench_model(settings, batch_size=2, seconds=0.05)
    assert report["stream_window"] == 4
    # 4 frames x 3 taps x 256 patches x 384 float32 channels.
    assert report["stream_window_mb"] == pytest.approx(4 * 3 * 256 * 384 * 4 / 2**20, abs=0.1)
    assert report["frames_per_s"] > 0
    assert report["frames_per_s_stream_off"] > 0
    assert report["ratio_stream_on_over_off"] == pytest.approx(
        report["frames_per_s"] / report["frames_per_s_stream_off"], rel=0.01)


def test_bench_model_measures_the_default_llm_verdict_and_its_backbone(model_cache_dir,
                                                                       one_torch_thread):
    # cpu-small's default verdict is the committed delta's LLM; its backbone is the few-shot
    # detector whose map the LLM reads.
    settings = Settings(cache_dir=model_cache_dir, torch_threads=1, cpu_verdict="llm")
    report = bench_model(settings, batch_size=2, seconds=0.05)
    assert report["verdict_source"] == "llm"
    assert report["frames_per_s"] > 0
    assert report["backbone_frames_per_s"] > report["frames_per_s"]
    assert report["stream_window"] == 0  # the LLM detector's window is not compared here
