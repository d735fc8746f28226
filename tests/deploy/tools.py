"""Paths of the deploy/ files and the external tools their tests run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
SCHEMAS = DEPLOY / "schemas"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    """Run promtool (Debian's `prometheus` package; `make test` installs it when missing)."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: `make test` installs it (apt-get install prometheus)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def amtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    """Run amtool (Debian's `prometheus-alertmanager`; `make test` installs it when missing)."""
    exe = shutil.which("amtool")
    if exe is None:
        pytest.fail("amtool is missing: `make test` installs it "
                    "(apt-get install prometheus-alertmanager)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def load_yaml(path: Path) -> object:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[object]:
    """Every non-empty document of a multi-document YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def rules() -> list[dict]:
    """Every rule (recording and alerting) of deploy/prometheus/rules.yml."""
    data = load_yaml(PROMETHEUS / "rules.yml")
    assert isinstance(data, dict)
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    """The alerting rules of deploy/prometheus/rules.yml."""
    return [rule for rule in rules() if "alert" in rule]
