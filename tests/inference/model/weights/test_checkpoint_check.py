"""The lazy check of the official files (`agpt model check`)."""

import pytest
import torch

from inference.model.anomalygpt.decoder import ImageDecoder
from inference.model.anomalygpt.imagebind import (
    ImageBindConfig,
    ImageBindEncoder,
    official_name_map,
)
from inference.model.anomalygpt.prompt_learner import PromptLearner
from inference.model.weights.checkpoint_check import check_checkpoints
from tests.inference.model.weights.test_checkpoints import (
    HIDDEN,
    LAYERS,
    RANK,
    delta_state,
    pandagpt_state,
    tiny_peft_llama,
)


def test_check_checkpoints_reads_lazily_and_names_problems(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft_model, base = tiny_peft_llama()
    config = ImageBindConfig.tiny()
    with torch.device("meta"):
        encoder = ImageBindEncoder(config)
    ours = dict(encoder.named_parameters()) | dict(encoder.named_buffers())
    imagebind = {k: torch.zeros(ours[v].shape) for k, v in official_name_map(config).items()}
    imagebind["modality_trunks.audio.blocks.0.attn.in_proj_weight"] = torch.zeros(3, 1)
    torch.save(imagebind, tmp_path / "imagebind_huge.pth")
    llm = tmp_path / "llm"
    transformers.LlamaForCausalLM(base.config).save_pretrained(llm)
    (llm / "tokenizer.json").write_text("{}")
    torch.save(pandagpt_state(peft_model, default=False), tmp_path / "panda.pt")
    torch.manual_seed(0)
    delta = delta_state(ImageDecoder(config.vision_width, config.embed_dim, 4),
                        PromptLearner(dim_out=HIDDEN))
    torch.save(delta, tmp_path / "agpt.pt")

    report = check_checkpoints(imagebind=tmp_path / "imagebind_huge.pth", llm=llm,
                               pandagpt=tmp_path / "panda.pt", anomalygpt=tmp_path / "agpt.pt",
                               imagebind_config=config)
    assert report.ok, report.format()
    assert [f.name for f in report.files] == ["imagebind", "llm", "pandagpt", "anomalygpt"]
    assert f"LLaMA hidden {HIDDEN}, {LAYERS} layers" in str(report)
    assert f"LoRA rank {RANK}" in str(report)

    delta.pop("image_decoder.fc.3.bias")
    delta["prompt_learner.base_prompts"] = torch.zeros(9, 4096)
    torch.save(delta, tmp_path / "bad.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    report = check_checkpoints(anomalygpt=tmp_path / "bad.pt", pandagpt=tmp_path / "broken.pt",
                               llm=llm, imagebind_config=config)
    assert not report.ok
    text = report.format()
    assert "FAIL anomalygpt" in text
    assert "missing image_decoder.fc.3.bias" in text
    assert f"mis-shaped prompt_learner.base_prompts: (9, 4096), expected (9, {HIDDEN})" in text
    assert "FAIL pandagpt" in text
    assert "cannot read" in text
