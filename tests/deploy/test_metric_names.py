"""Every metric a rule or dashboard panel queries is exported by the worker's registry."""

import json
import re

from prometheus_client import CollectorRegistry

from inference.health import Readiness
from inference.metrics import WorkerMetrics
from tests.deploy.tools import DEPLOY, rules

# Series Prometheus makes itself, not the worker.
SYNTHETIC = {"up"}
RAW_NAME = re.compile(r"(?<![\w:])(agpt_[a-z0-9_]+)")
RECORDED_NAME = re.compile(r"(?<![\w:])(agpt:[a-z0-9_:]+)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",), "summary": ("", "_sum", "_count")}


def exported_names() -> set[str]:
    """Sample names of a worker's registry, built as `agpt worker` builds it."""
    registry = CollectorRegistry()
    WorkerMetrics(registry, readiness=Readiness("model", "consumer"))
    return {family.name + suffix for family in registry.collect()
            for suffix in SUFFIXES[family.type]}


def panel_exprs() -> list[str]:
    """Every PromQL expression of the provisioned Grafana dashboards."""
    exprs = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
    assert exprs, "no dashboard panels found"
    return exprs


def rule_exprs() -> list[str]:
    return [rule["expr"] for rule in rules()]


def test_the_name_extraction_sees_names_next_to_selectors():
    found = RAW_NAME.findall('rate(agpt_a_total{job="agpt-worker"}[5m]) / agpt_b')
    assert found == ["agpt_a_total", "agpt_b"]
    assert RECORDED_NAME.findall("agpt:x:rate5m > 1") == ["agpt:x:rate5m"]


def test_every_raw_metric_in_rules_and_panels_is_exported():
    exported = exported_names()
    used = {name for expr in rule_exprs() + panel_exprs() for name in RAW_NAME.findall(expr)}
    assert used, "no metric names found"
    assert used - exported == set(), f"not exported by the worker; exported: {sorted(exported)}"


def test_every_recorded_series_in_alerts_and_panels_is_recorded():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = {name for expr in rule_exprs() + panel_exprs()
            for name in RECORDED_NAME.findall(expr)}
    assert used - recorded == set()


def test_a_renamed_metric_would_be_caught():
    # The comparison is not vacuous: a metric the code does not export is reported.
    assert "agpt_verdicts_total" in exported_names()
    assert "agpt_verdict_total" not in exported_names()
    assert "agpt_worker_ready" in exported_names()
