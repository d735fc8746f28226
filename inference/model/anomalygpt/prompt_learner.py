"""AnomalyGPT's prompt learner: turns a 224×224 anomaly map into LLM prompt embeddings.

Follows CASIA-IVA-Lab/AnomalyGPT `code/model/AnomalyGPT_models.py` (`PromptLearner`, lines
32-73, built as `PromptLearner(1, 4096)` in `openllama.py`): five steps of Conv2d 3×3 pad 1 +
ReLU + MaxPool2d 2 (channels 1→4→16→64→256→1024, 224→7 pixels; module indices 0, 3, 6, 9,
12; batch norm commented out there), then Conv2d(1024, dim_out, 5) without padding (index 15,
7×7→3×3) → 9 image prompts. 9 learned `base_prompts` (initialised `torch.randn`) come first.
The reference hard-codes 4096 in its reshape; here it is `dim_out` (the LLM hidden size, e.g.
576 for SmolLM2-135M). The conv widths are the reference's by default; a small composition may
narrow them (`channels`), which keeps the key names and changes only the shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PromptLearner"]

_MAP_SIZE = 224  # the conv stack maps 224 → 7 → (5×5 conv) 3, i.e. 9 image prompts
CHANNELS = (1, 4, 16, 64, 256, 1024)  # the reference's conv widths


class PromptLearner(nn.Module):
    """Anomaly-map → prompt embeddings.

    Args:
        dim_out: LLM hidden size (4096 for Vicuna-7B).
        num_base: Number of learned base prompts (9).
        channels: Conv widths, 1 (the map) first; five 3×3 steps then the 5×5 conv.

    Parameter names (`meta_net.{0,3,6,9,12,15}.weight/bias`, `base_prompts`) match the
    official delta under `prompt_learner.`.
    """

    def __init__(self, dim_out: int = 4096, num_base: int = 9,
                 channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        if len(channels) != len(CHANNELS) or channels[0] != 1:
            msg = f"channels must be 6 widths starting with 1 (224 → 7 px), got {channels}"
            raise ValueError(msg)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        layers.append(nn.Conv2d(channels[-1], dim_out, 5))  # index 15; [B, dim_out, 3, 3]
        self.meta_net = nn.Sequential(*layers)
        self.base_prompts = nn.Parameter(torch.randn(num_base, dim_out))
        self.dim_out = dim_out

    @torch.no_grad()
    def init_readable(self, token_norm: float) -> None:
        """Re-draws the weights so the prompts carry the map at the scale of word embeddings.

        The default init (PyTorch's uniform conv weights and biases, `randn` base prompts) turns
        a map into image prompts that differ between a normal and an anomalous map by ~2 % of
        their norm, next to base prompts of norm ~sqrt(dim_out): an LLM with a small embedding
        norm (SmolLM2: ~3) has close to nothing to read and learns the answer's prior first.
        Here the 3×3 convs are Kaiming-normal (ReLU gain) without biases, so the stack stays
        positively homogeneous (a map twice as high gives prompts twice as long, about 40 % of
        the prompt norm varies with the map), and the last conv and the base prompts are
        drawn so that a map of about 1 gives prompts of about `token_norm`.

        Args:
            token_norm: Typical norm of the LLM's token embeddings.
        """
        convs = [m for m in self.meta_net if isinstance(m, nn.Conv2d)]
        for conv in convs:
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        for conv in convs[:-1]:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        last = convs[-1]
        fan_in = last.weight[0].numel()
        nn.init.normal_(last.weight, std=token_norm / (self.dim_out * fan_in) ** 0.5)
        nn.init.normal_(self.base_prompts, std=token_norm / self.dim_out**0.5)

    def forward(self, anomaly_map: Tensor) -> Tensor:
        """Prompt embeddings for the LLM.

        Args:
            anomaly_map: [B, 1, 224, 224] anomaly map (probabilities or distances).

        Returns:
            [B, num_base + 9, dim_out]: the base prompts, then the 9 image prompts (row-major
            over the 3×3 output grid).
        """
        if anomaly_map.ndim != 4 or tuple(anomaly_map.shape[1:]) != (1, _MAP_SIZE, _MAP_SIZE):
            msg = f"anomaly_map must be [B, 1, 224, 224], got {tuple(anomaly_map.shape)}"
            raise ValueError(msg)
        batch = anomaly_map.shape[0]
        image = self.meta_net(anomaly_map.to(self.base_prompts.dtype))  # [B, dim_out, 3, 3]
        image = image.reshape(batch, self.dim_out, -1).transpose(1, 2)  # [B, 9, dim_out]
        base = self.base_prompts.expand(batch, -1, -1)
        return torch.cat([base, image], dim=1)
