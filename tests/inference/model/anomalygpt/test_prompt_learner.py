"""Prompt learner layout, output order and the released parameter count."""

import pytest
import torch
from torch import nn

from inference.model.anomalygpt.decoder import ImageDecoder
from inference.model.anomalygpt.prompt_learner import PromptLearner

torch.set_num_threads(1)


def test_meta_net_layout_matches_the_reference_indices():
    learner = PromptLearner(dim_out=32)
    convs = {i: m for i, m in enumerate(learner.meta_net) if isinstance(m, nn.Conv2d)}
    assert sorted(convs) == [0, 3, 6, 9, 12, 15]
    channels = [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs.values()]
    assert channels == [
        (1, 4, (3, 3), (1, 1)), (4, 16, (3, 3), (1, 1)), (16, 64, (3, 3), (1, 1)),
        (64, 256, (3, 3), (1, 1)), (256, 1024, (3, 3), (1, 1)), (1024, 32, (5, 5), (0, 0)),
    ]
    for i in (1, 4, 7, 10, 13):
        assert isinstance(learner.meta_net[i], nn.ReLU)
        assert isinstance(learner.meta_net[i + 1], nn.MaxPool2d)
    assert len(learner.meta_net) == 16
    assert learner.base_prompts.shape == (9, 32)


def test_output_is_base_prompts_then_nine_image_prompts_576():
    torch.manual_seed(0)
    learner = PromptLearner(dim_out=576).eval()
    maps = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        out = learner(maps)
        grid = learner.meta_net(maps)  # [B, 576, 3, 3]
    assert out.shape == (2, 18, 576)
    torch.testing.assert_close(out[:, :9], learner.base_prompts.expand(2, -1, -1))
    # Image prompt k is output pixel (k // 3, k % 3), all channels.
    for k in range(9):
        torch.testing.assert_close(out[:, 9 + k], grid[:, :, k // 3, k % 3])


def test_official_size_on_meta_device_shape_and_parameter_count():
    with torch.device("meta"):
        learner = PromptLearner(dim_out=4096)
        decoder = ImageDecoder(1280, 1024, 4)
        out = learner(torch.empty(3, 1, 224, 224))
    assert out.shape == (3, 18, 4096)
    total = sum(p.numel() for m in (learner, decoder) for p in m.parameters())
    assert total / 1e6 == pytest.approx(112.66, abs=0.01)
    assert total * 2 / 1e6 == pytest.approx(225.3, abs=0.05)  # the fp16 delta, in MB


def test_rejects_a_map_of_the_wrong_size():
    with pytest.raises(ValueError, match="224"):
        PromptLearner(dim_out=8)(torch.zeros(1, 1, 112, 112))


def test_init_readable_gives_prompts_at_the_token_norm_that_scale_with_the_map():
    torch.manual_seed(0)
    learner = PromptLearner(576, 9, (1, 4, 16, 64, 128, 256))
    default_map = torch.full((2, 1, 224, 224), 0.5)  # a flat map and one with a spot
    default_map[1, :, 100:140, 60:100] = 2.0
    with torch.no_grad():
        before = learner(default_map)[:, 9:]
    learner.init_readable(3.0)
    convs = [m for m in learner.meta_net if isinstance(m, nn.Conv2d)]
    assert all(float(c.bias.abs().max()) == 0 for c in convs)
    assert float(learner.base_prompts.norm(dim=-1).mean()) == pytest.approx(3.0, rel=0.1)
    ones = torch.ones(1, 1, 224, 224)
    with torch.no_grad():
        once, twice = learner(ones)[:, 9:], learner(2 * ones)[:, 9:]
        after = learner(default_map)[:, 9:]
    # Without biases the ReLU/max-pool stack is positively homogeneous: twice the map, twice
    # the prompts.
    torch.testing.assert_close(twice, 2 * once, rtol=1e-4, atol=1e-5)
    assert 0.3 < float(once.norm(dim=-1).mean()) / 3.0 < 3.0
    # The two maps' prompts differ by a larger share of their norm than at default init.
    def spread(out: torch.Tensor) -> float:
        return float((out[0] - out[1]).norm() / out.norm(dim=-1).mean())

    assert spread(after) > 3 * spread(before)
