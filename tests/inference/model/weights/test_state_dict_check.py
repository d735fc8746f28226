"""The strict state-dict check shared by the DINOv2 and EfficientNet loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.model.weights.state_dict_check import check_state_dict

EXPECTED = {"a.weight": torch.zeros(4, 3), "a.bias": torch.zeros(4)}


def test_exact_match_passes_for_tensors_and_arrays() -> None:
    check_state_dict(EXPECTED, {"a.weight": np.zeros((4, 3)), "a.bias": torch.ones(4)}, "f")


@pytest.mark.parametrize(("found", "named"), [
    ({"a.weight": torch.zeros(4, 3)}, r"f: tensors missing \['a\.bias'\]"),
    ({**EXPECTED, "b.weight": torch.zeros(1)}, r"unexpected \['b\.weight'\]"),
    ({"a.weight": torch.zeros(3, 4), "a.bias": torch.zeros(4)}, r"a\.weight: \(3, 4\) != \(4, 3\)"),
])
def test_every_mismatch_is_named(found: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        check_state_dict(EXPECTED, found, "f")
