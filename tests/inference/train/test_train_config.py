"""`agpt train --config`: TOML and YAML files, and the mistakes users make in them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agpt.cli import main
from inference.train.config import ConfigError, load_config
from inference.train.datasets import EVALUATION_SOURCES

REPO = Path(__file__).resolve().parents[3]


def test_the_train_small_config_trains_on_wheel_photos_and_procedural_textures_only():
    config = load_config(REPO / "configs" / "train-small.toml")
    assert config.profile == "cpu-small"
    assert all(s.startswith(("skimage:", "procedural:")) for s in config.sources)
    assert not set(config.sources) & EVALUATION_SOURCES
    assert config.delta == REPO / "inference" / "model" / "assets" / "cpu-small-delta.safetensors"
    assert config.train.pixel_only_steps < config.train.steps
    # The prompts read the served detector's evidence, each image against its own pool.
    assert config.evidence == "cpu-small"
    assert config.shots


def test_yaml_gives_the_same_config(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "model: {profile: cpu-small}\ndata: {wheel_images: [coins, camera]}\n"
        "train: {steps: 7, batch_size: 2}\noutput: {dir: out}\n")
    config = load_config(tmp_path / "c.yaml")
    assert [p.name for p in config.products] == ["coins", "camera"]
    assert config.train.steps == 7
    assert config.out_dir == tmp_path / "out"
    assert config.delta == tmp_path / "out" / "delta.safetensors"
    assert not config.readable_prompts


def test_texture_families_can_be_named(tmp_path):
    (tmp_path / "c.toml").write_text("[data]\ntextures = [\"cells\", \"grain\"]\n")
    config = load_config(tmp_path / "c.toml")
    assert [p.name for p in config.products] == ["cells texture", "grain texture"]
    assert config.sources == ["procedural:cells", "procedural:grain"]


@pytest.mark.parametrize(("text", "message"), [
    ("[train]\nstep = 3\n[data]\nwheel_images = true\n", "unknown key"),
    ("[data]\nwheel_images = [\"brick\"]\n", "evaluation set"),
    ("[model]\nprofile = \"huge\"\n[data]\nwheel_images = true\n", "trainable"),
    ("[data]\n", "no training images"),
    ("[data]\ntextures = [\"grass\"]\n", "unknown texture families"),
    ("[data\n", "not valid TOML"),
    ("[model]\nevidence = \"cpu-small\"\n[data]\nwheel_images = true\n", "needs pools"),
    ("[model]\nevidence = \"anomalygpt-7b\"\n[data]\nwheel_images = true\n"
     "[simulation]\nshots = [1]\n", "few-shot profile"),
    ("[data]\nwheel_images = true\n[simulation]\nshots = [0]\n", "must be >= 1"),
    ("[model]\nprofile = \"anomalygpt-7b\"\nreadable_prompts = true\n[data]\nwheel_images = true\n",
     "cpu-small only"),
])
def test_config_mistakes_are_one_line_and_exit_2(tmp_path, capsys, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "\n" not in err
