"""Image → normalised tensor, the same for references and queries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def to_tensor(
    images: Sequence[Image.Image],
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """Resize whole images to size×size (bicubic) and normalise.

    The whole field of view is kept (no centre crop) so that defects at the border
    of the part are not cropped away.

    Returns:
        [B, 3, size, size] float32.
    """
    arrays = [
        np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
        for img in images
    ]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t
