"""The trainer on real DINOv2-S taps with a tiny random LLaMA: what trains, one step, resume."""

from __future__ import annotations

import pytest
import torch

from inference.model.anomalygpt.dinov2_encoder import Dinov2Encoder
from inference.model.anomalygpt.llm import LoraSettings
from inference.model.anomalygpt.model import AnomalyGPT, AnomalyGPTConfig
from inference.model.testing import tiny_composition
from inference.model.weights.checkpoints import read_state_dict
from inference.train.datasets import wheel_products
from inference.train.lm_inputs import build_training_inputs
from inference.train.losses import IGNORE
from inference.train.samples import SampleSource
from inference.train.trainer import (
    DELTA_NAME,
    Trainer,
    TrainSettings,
    lift_below_one,
    select_trainable,
)

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]

TINY = AnomalyGPTConfig(None, llm_hidden=16, lora=LoraSettings(r=4, alpha=4, dropout=0.0),
                        encoder_taps=(3, 5, 7, 9), prompt_channels=(1, 4, 8, 8, 8, 8),
                        map_mode="replace", prompt_map="calibrated")


@pytest.fixture(scope="module")
def encoder(dinov2_encoder: Dinov2Encoder) -> Dinov2Encoder:
    return dinov2_encoder


def tiny(encoder: Dinov2Encoder, seed: int) -> AnomalyGPT:
    """Real DINOv2-S taps with a two-layer random LLaMA of hidden 16 (cheap checks)."""
    return tiny_composition(encoder, TINY, seed=seed)


def source() -> SampleSource:
    return SampleSource(wheel_products(("coins", "coffee", "camera")), seed=3,
                        anomaly_ratio=0.75)


SETTINGS = TrainSettings(steps=4, batch_size=2, lr=3e-3, warmup_steps=1)


def test_only_the_decoder_prompt_learner_llama_proj_and_lora_train(encoder):
    model = tiny(encoder, seed=0)
    params = select_trainable(model, lora=True)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(params) == len(names)
    assert names
    assert all(n.startswith(("image_decoder.", "prompt_learner.", "llm.llama_proj."))
                         or ".lora_" in n for n in names)
    assert "image_decoder.states" in names  # learned state features of a vision-only encoder
    assert not any(n.startswith("encoder.") for n in names)
    assert any(".lora_" in n for n in names)
    without = {n for n, p in model.named_parameters()
               if p.requires_grad} if select_trainable(model, lora=False) else set()
    assert not any(".lora_" in n for n in without)


def test_labels_cover_exactly_the_answer_tokens(encoder):
    model = tiny(encoder, seed=0)
    tokenizer = model.llm.tokenizer
    dialogues = [[("Is there any anomaly in the image?", "No, there is no anomaly.")],
                 [("Is there?", "Yes."), ("Where?", "At the top.")]]
    inputs = build_training_inputs(model.llm, dialogues, torch.zeros(2, 384),
                                   torch.zeros(2, 18, 16))
    for row, turns in zip(inputs.labels, dialogues, strict=True):
        labelled = row[row != IGNORE].tolist()
        expected = [i for _, a in turns
                    for i in tokenizer(f" {a}\n###", add_special_tokens=False).input_ids]
        assert labelled == expected
    # Left padding: the answers end every row, so the kept logits hold every label.
    assert (inputs.labels[:, : -inputs.keep] == IGNORE).all()
    assert inputs.attention_mask[0, 0] == 0
    assert inputs.attention_mask[:, -1].all()


@pytest.mark.parametrize("settings", [
    SETTINGS, TrainSettings(steps=4, batch_size=2, lr=3e-3, warmup_steps=1, verdict_weight=2.0,
                            verdict_balance=True)], ids=["plain", "balanced-verdict"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(encoder, tmp_path, settings):
    model = tiny(encoder, seed=0)
    trainer = Trainer(model, source(), settings, tmp_path)
    fixed = trainer.samples(0, 0)
    assert any(s.mask.any() for s in fixed)
    assert any(s.kind == "normal" for s in fixed)

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(trainer.losses(fixed, with_lm=True)["loss"])

    before = loss()
    trainer.samples = lambda step, micro: fixed  # type: ignore[method-assign]
    trainer.train_step()
    after = loss()
    assert after < before


def test_save_then_resume_gives_the_identical_next_step_loss(encoder, tmp_path):
    first = Trainer(tiny(encoder, seed=0), source(), SETTINGS, tmp_path / "a")
    first.train_step()
    first.train_step()
    checkpoint = first.save_checkpoint()
    assert checkpoint.name == "checkpoint-2"
    saved = read_state_dict(checkpoint / DELTA_NAME)
    trained = {n for n, p in first.model.named_parameters() if p.requires_grad}
    assert len(saved) == len(trained)  # only the trained tensors, in the delta layout
    assert {k.split(".")[0] for k in saved} == {"image_decoder", "prompt_learner",
                                                "llama_proj", "llama_model"}
    expected = first.train_step()

    other = tiny(encoder, seed=0)  # the same frozen LM; trained parts drawn afresh
    with torch.no_grad():
        for name, param in other.named_parameters():
            if name.startswith(("image_decoder.", "prompt_learner.", "llm.llama_proj.")) or (
                    ".lora_" in name):
                param.normal_()
    second = Trainer(other, source(), SETTINGS, tmp_path / "b")
    before = second.train_step()["loss"]
    second = Trainer(other, source(), SETTINGS, tmp_path / "b")
    second.resume(checkpoint)
    assert second.step == 2
    got = second.train_step()
    assert got["loss"] == expected["loss"]
    assert got["lr"] == expected["lr"]
    assert before != expected["loss"]  # without the checkpoint the step differs


def test_run_logs_every_step_and_exports_a_float16_delta(encoder, tmp_path):
    settings = TrainSettings(steps=3, batch_size=1, pixel_only_steps=2, checkpoint_every=2)
    trainer = Trainer(tiny(encoder, seed=0), source(), settings, tmp_path)
    terms = list(trainer.run(progress=False))
    assert [t["lm"] == 0 for t in terms] == [True, True, False]
    rows = (tmp_path / "loss_log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lm,pixel,lr,seconds"
    assert len(rows) == 4
    assert (tmp_path / "checkpoint-2" / DELTA_NAME).is_file()
    path = trainer.export(tmp_path / "delta.safetensors")
    state = read_state_dict(path)
    assert {v.dtype for v in state.values()} == {torch.float16}
    fresh = tiny(encoder, seed=9)
    fresh.load_delta(path)  # strict


def test_the_lift_raises_the_map_below_the_threshold_and_keeps_the_rest():
    maps = torch.tensor([[[0.0, 0.25, 0.81, 1.0, 2.5]], [[0.0, 0.25, 0.81, 1.0, 2.5]]])
    lifted = lift_below_one(maps, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(lifted[0], torch.tensor([[0.0, 0.5, 0.9, 1.0, 2.5]]))
    torch.testing.assert_close(lifted[1], maps[1])  # gamma 1: as served
    assert ((lifted >= 1.0) == (maps >= 1.0)).all()  # the threshold's side is kept


def test_lifted_steps_are_a_pure_function_of_the_step(encoder, tmp_path):
    settings = TrainSettings(steps=2, batch_size=2, lr=3e-3, warmup_steps=1, evidence_lift=0.7)
    first = Trainer(tiny(encoder, seed=0), source(), settings, tmp_path / "a")
    lifted = first.train_step()
    second = Trainer(tiny(encoder, seed=0), source(), settings, tmp_path / "b")
    assert second.train_step()["loss"] == lifted["loss"]
    unlifted = Trainer(tiny(encoder, seed=0), source(), SETTINGS, tmp_path / "c")
    assert unlifted.train_step()["lm"] != lifted["lm"]  # the prompts read the lifted map
