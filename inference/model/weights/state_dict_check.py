"""The strict check every loader runs before copying tensors into a network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_state_dict(expected: Mapping[str, Any], found: Mapping[str, Any], source: str) -> None:
    """Raises unless `found` has exactly the tensors of `expected`, shape for shape.

    Args:
        expected: Name -> tensor (or anything with `.shape`) the network holds.
        found: Name -> tensor or array read from the file.
        source: The file or graph, for the message.

    Raises:
        ValueError: naming every missing, unexpected and mis-shaped tensor.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        msg = f"{source}: tensors missing {missing}; unexpected {unexpected}"
        raise ValueError(msg)
    wrong = [f"{name}: {tuple(found[name].shape)} != {tuple(value.shape)}"
             for name, value in expected.items()
             if tuple(found[name].shape) != tuple(value.shape)]
    if wrong:
        msg = f"{source}: shapes differ: {wrong}"
        raise ValueError(msg)
