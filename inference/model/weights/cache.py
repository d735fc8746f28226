"""A directory cache of converted weights, published atomically and keyed by the source hash.

Conversions (ONNX → transformers, GGUF → safetensors) run once; later processes reload the
result. Writers fill a temporary sibling and rename it into place, so a reader never sees a
half-written cache, and two processes racing to convert leave one complete copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SOURCE_FILE = "source.json"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_source(target: Path) -> dict[str, str] | None:
    """The source record of a published cache, or None when absent or unreadable."""
    try:
        record = json.loads((target / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def publish(target: Path, write: Callable[[Path], None], source: dict[str, str]) -> None:
    """Write a cache directory with ``write(tmp_dir)`` and rename it to ``target``.

    Args:
        target: Final cache directory; a stale one is moved aside and removed.
        write: Fills the given empty directory (e.g. ``model.save_pretrained``).
        source: Recorded in ``source.json`` (e.g. the source file's sha256).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    name = target.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        write(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(source))
        if target.exists():  # stale: move it aside so the rename below can take its place
            stale = Path(tempfile.mkdtemp(prefix=f".{name}.stale.", dir=target.parent))
            try:
                os.replace(target, stale / name)
            except FileNotFoundError:
                pass  # another process moved it first
        try:
            os.rename(tmp, target)
        except OSError:
            pass  # another process won the race; its cache is equivalent to ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for stale in target.parent.glob(f".{name}.stale.*"):
            shutil.rmtree(stale, ignore_errors=True)


def load_if_current(
    target: Path,
    *,
    source_key: str,
    sha: str,
    load: Callable[[Path], tuple[Any, Mapping[str, Any]]],
) -> Any | None:
    """Load a published cache if it was made from the same source and loads completely.

    Args:
        target: The cache directory.
        source_key: The ``source.json`` field holding the source's sha256.
        sha: The current source's sha256.
        load: ``from_pretrained(..., output_loading_info=True)``-style loader returning
            ``(model, info)``.

    Returns:
        The model in eval mode, or None when the cache is absent, stale, corrupt or foreign
        (the caller then converts again).
    """
    source = cached_source(target)
    if source is None or source.get(source_key) != sha:
        return None
    model, info = load(target)
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        return None
    return model.eval()
