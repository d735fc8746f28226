"""Lint of the provisioned Grafana dashboards: structure, data source, PromQL that parses."""

import json

import pytest
import yaml

from tests.deploy.tools import DEPLOY, load_yaml, promtool

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def datasource_uids() -> set[str]:
    data = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    return {ds["uid"] for ds in data["datasources"]}


def overlaps(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def test_there_is_a_dashboard():
    assert DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path):
    dash = json.loads(path.read_text())
    assert dash["uid"]
    assert dash["title"]
    assert isinstance(dash["schemaVersion"], int)
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(isinstance(i, int) for i in ids)
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] >= 0, p["title"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
        assert min(grid["w"], grid["h"]) > 0, p["title"]
    for i, a in enumerate(panels):
        for b in panels[i + 1:]:
            assert not overlaps(a["gridPos"], b["gridPos"]), (a["title"], b["title"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_uses_the_provisioned_data_source(path):
    uids = datasource_uids()
    for panel in json.loads(path.read_text())["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids
            assert target["expr"].strip()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_expression_parses(path, tmp_path):
    # promtool parses PromQL when checking rules: one recording rule per panel query.
    exprs = [t["expr"] for p in json.loads(path.read_text())["panels"]
             for t in p.get("targets", [])]
    rules = {"groups": [{"name": "panels", "rules": [
        {"record": f"panel:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", "panels.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expression_is_caught(tmp_path):
    rules = {"groups": [{"name": "p", "rules": [{"record": "x", "expr": "sum by (a (b)"}]}]}
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(rules))
    assert promtool("check", "rules", "bad.yml", cwd=tmp_path).returncode != 0


def test_the_issue_panels_exist():
    titles = " | ".join(p["title"].lower() for path in DASHBOARDS
                        for p in json.loads(path.read_text())["panels"])
    for needed in ("throughput", "latency", "lag", "anomaly rate per product",
                   "anomaly rate per camera", "dead letters by reason", "readiness"):
        assert needed in titles
