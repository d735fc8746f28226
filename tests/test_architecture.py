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
    return imported_modules_of(path.read_text(), str(path))


def imported_modules_of(source: str, filename: str = "<source>") -> set[str]:
    """Absolute module names imported by ``source`` (``from x import y`` gives ``x``)."""
    tree = ast.parse(source, filename=filename)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# Which of our packages each package may import (besides itself).
ALLOWED = {
    "storage": set(),
    "ingest": set(),
    "inference/model": set(),  # pure torch: imports only its siblings (relative imports)
    "inference": {"ingest", "storage"},
    # The dashboard reads frame images through the blob store's interface (the store the
    # workers write), nothing else of ingest: single modules may be named.
    "review": {"storage", "ingest.blobstore"},
    "agpt": {"ingest", "inference", "review", "storage"},  # agpt/bench/ included
}


# -- the checkers: each takes source text and returns what breaks its rule ------------------
def downstream_offenders(source: str, allowed: set[str]) -> list[str]:
    """Imports of our packages that are not in ``allowed`` (packages or single modules)."""
    return sorted(name for name in imported_modules_of(source)
                  if name.split(".")[0] in OURS and name.split(".")[0] not in allowed
                  and name not in allowed)


def kafka_offenders(source: str) -> list[str]:
    """Imports of the Kafka client (allowed in ``ingest/transport/`` only)."""
    return sorted(name for name in imported_modules_of(source) if name.split(".")[0] == "kafka")


def heavy_offenders(source: str) -> list[str]:
    """Imports of torch, Kafka or transformers (never in the dashboard)."""
    return sorted(name for name in imported_modules_of(source)
                  if name.split(".")[0] in {"torch", "kafka", "transformers"})


def transport_classes() -> set[str]:
    """Names of the classes the transport implementations define."""
    return {node.name for path in python_files("ingest/transport")
            for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)}


def transport_isinstance_offenders(source: str, classes: set[str]) -> list[str]:
    """``isinstance``/``issubclass`` checks against a transport class (callers use the
    ``Transport`` protocol; only the transport knows its implementations)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in {"isinstance", "issubclass"} and len(node.args) == 2):
            for part in ast.walk(node.args[1]):
                name = part.id if isinstance(part, ast.Name) else (
                    part.attr if isinstance(part, ast.Attribute) else None)
                if name in classes:
                    found.append(f"line {node.lineno}: {node.func.id}(..., {name})")
    return found


# SQLAlchemy names that carry no SQL: session types, URLs and errors.
SQLALCHEMY_TYPES = {"sqlalchemy": {"Engine"}, "sqlalchemy.orm": {"Session", "sessionmaker"},
                    "sqlalchemy.engine": {"Engine", "URL", "make_url"}}
SESSION_SQL = {"execute", "scalar", "scalars", "get", "add", "add_all", "delete", "merge",
               "query", "flush"}


def sql_offenders(source: str) -> list[str]:
    """SQL or ORM use outside ``storage/``: statement builders, ORM models, raw execution.

    Allowed: the session and engine types, ``make_url`` and ``sqlalchemy.exc`` errors (to
    pass sessions along and catch database failures); everything else is storage's.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module = node.module
            if module == "storage.models" or module.startswith("storage.migrations"):
                found.append(f"line {node.lineno}: from {module} import ...")
            elif module.split(".")[0] == "sqlalchemy" and module != "sqlalchemy.exc":
                extra = {a.name for a in node.names} - SQLALCHEMY_TYPES.get(module, set())
                if extra:
                    found.append(f"line {node.lineno}: from {module} import {sorted(extra)}")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name == "storage.models" or (a.name.split(".")[0] == "sqlalchemy"
                                                        and a.name != "sqlalchemy.exc")]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in SESSION_SQL and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "session"):
            found.append(f"line {node.lineno}: session.{node.func.attr}(...)")
    return found


def offenders_in(paths: list[Path], check, *args) -> list[str]:
    return [f"{relative(path)}: {problem}" for path in paths
            for problem in check(path.read_text(), *args)]


# -- the rules on the tree ------------------------------------------------------------------
@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_downstream_only(package):
    own = package.split("/")[0]
    allowed = ALLOWED[package] | ({own} if package != "inference/model" else set())
    paths = [path for path in python_files(package)
             if not (package == "inference" and relative(path).startswith("inference/model/"))]
    assert offenders_in(paths, downstream_offenders, allowed) == []


def test_every_python_folder_is_under_a_rule():
    # A new top-level package (say a `bench/` beside agpt/) would escape every rule above.
    tops = {path.relative_to(ROOT).parts[0] for path in ROOT.glob("*/**/*.py")
            if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)}
    assert tops - {"tests"} <= set(OURS), sorted(tops)
    assert any(relative(path).startswith("agpt/bench/") for path in python_files("agpt"))


def test_kafka_is_imported_only_inside_the_transport():
    paths = [path for package in OURS for path in python_files(package)
             if not relative(path).startswith("ingest/transport/")]
    assert offenders_in(paths, kafka_offenders) == []


def test_no_transport_isinstance_outside_the_transport():
    classes = transport_classes()
    assert {"KafkaTransport", "InProcessBroker"} <= classes
    paths = [path for package in OURS for path in python_files(package)
             if not relative(path).startswith("ingest/transport/")]
    assert offenders_in(paths, transport_isinstance_offenders, classes) == []


@pytest.mark.parametrize("package", ["inference", "agpt", "review", "ingest"])
def test_sql_and_orm_models_stay_in_storage(package):
    assert offenders_in(python_files(package), sql_offenders) == []


def test_review_never_imports_torch_or_kafka():
    assert offenders_in(python_files("review"), heavy_offenders) == []


# -- each rule fails when broken ------------------------------------------------------------
OFFENDERS = [
    ("downstream", "from inference.worker import InferenceWorker\n", downstream_offenders,
     ({"storage"},)),
    ("downstream", "import agpt.cli\n", downstream_offenders, (set(),)),
    ("kafka", "from kafka import KafkaConsumer\n", kafka_offenders, ()),
    ("kafka", "import kafka.errors\n", kafka_offenders, ()),
    ("heavy", "import torch\n", heavy_offenders, ()),
    ("heavy", "from kafka.errors import KafkaError\n", heavy_offenders, ()),
    ("isinstance", "ok = isinstance(transport, KafkaTransport)\n",
     transport_isinstance_offenders, ({"KafkaTransport"},)),
    ("isinstance", "ok = isinstance(t, (kafka.KafkaTransport, int))\n",
     transport_isinstance_offenders, ({"KafkaTransport"},)),
    ("sql", "from sqlalchemy import select\n", sql_offenders, ()),
    ("sql", "from storage.models import PoolEntry\n", sql_offenders, ()),
    ("sql", "import sqlalchemy\n", sql_offenders, ()),
    ("sql", "rows = session.execute(query)\n", sql_offenders, ()),
    ("sql", "entry = session.get(Entry, 3)\n", sql_offenders, ()),
]


@pytest.mark.parametrize(("rule", "source", "check", "args"), OFFENDERS,
                         ids=[f"{rule}-{i}" for i, (rule, *_) in enumerate(OFFENDERS)])
def test_each_rule_catches_a_synthetic_offender(rule, source, check, args):
    assert check(source, *args), f"the {rule} rule missed: {source!r}"


def test_the_rules_let_the_allowed_forms_pass():
    allowed = ("from sqlalchemy.orm import Session, sessionmaker\n"
               "from sqlalchemy.exc import SQLAlchemyError\n"
               "from sqlalchemy.engine import make_url\n"
               "with factory() as session:\n    items = list_items(session=session)\n"
               "ok = isinstance(detector, AnomalyGPTDetector)\n")
    assert sql_offenders(allowed) == []
    assert transport_isinstance_offenders(allowed, {"KafkaTransport"}) == []
    assert kafka_offenders("from ingest.transport.base import Transport\n") == []


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
