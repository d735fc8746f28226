"""Import direction (the folders follow the frame) and nothing heavy at import time."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("agpt", "ingest", "inference", "review", "storage")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


# Which of our packages each package may import (besides itself).
ALLOWED = {
    "storage": set(),
    "ingest": set(),
    "inference/model": set(),  # pure torch: imports only its siblings (relative imports)
    "inference": {"ingest", "storage"},
    "review": {"storage"},
    "agpt": {"ingest", "inference", "review", "storage"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_downstream_only(package):
    own = package.split("/")[0]
    allowed = ALLOWED[package] | ({own} if package != "inference/model" else set())
    offenders = []
    for path in python_files(package):
        if package == "inference" and "model" in path.relative_to(ROOT / "inference").parts[:1]:
            continue  # checked separately, more strictly
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in OURS and top not in allowed:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_review_never_imports_torch_or_kafka():
    for path in python_files("review"):
        tops = {name.split(".")[0] for name in imported_modules(path)}
        assert not tops & {"torch", "kafka", "transformers"}, path


IMPORT_EVERYTHING = r"""
import importlib, json, pkgutil, sys
import torch, safetensors.torch, onnx, transformers

calls = []
def forbid(name):
    def _raise(*args, **kwargs):
        calls.append(name)
        raise RuntimeError(f"{name} called at import time")
    return _raise

torch.load = forbid("torch.load")
safetensors.torch.load_file = forbid("safetensors.load_file")
onnx.load = forbid("onnx.load")
transformers.PreTrainedModel.from_pretrained = classmethod(forbid("from_pretrained"))

modules = []
for package in ("agpt", "ingest", "inference", "review", "storage"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if ".migrations" in info.name or info.name == "review.app":
            continue  # alembic env (runs migrations) and the Streamlit script
        importlib.import_module(info.name)
        modules.append(info.name)
print(json.dumps({"modules": modules, "calls": calls,
                  "cuda_initialized": torch.cuda.is_initialized()}))
"""


@pytest.mark.slow
def test_importing_every_module_loads_no_weights_and_touches_no_cuda():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["calls"] == []
    assert report["cuda_initialized"] is False
    assert "inference.model.anomalygpt.model" in report["modules"]
    assert "inference.worker" in report["modules"]
