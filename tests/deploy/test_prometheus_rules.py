"""Prometheus rules: promtool checks and unit tests, and what every alert must carry."""

import pytest

from tests.deploy.tools import PROMETHEUS, alerts, amtool, load_yaml, promtool


def test_rules_and_configs_pass_promtool_check():
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_alert_fails_the_unit_tests(tmp_path):
    # The unit tests can fail: the same cases against a rule that never fires.
    rules = (PROMETHEUS / "rules.yml").read_text()
    broken = rules.replace("agpt:capture_to_verdict_seconds:p95_5m > 0.25",
                           "agpt:capture_to_verdict_seconds:p95_5m > 25")
    assert broken != rules
    (tmp_path / "rules.yml").write_text(broken)
    (tmp_path / "rules_test.yml").write_text((PROMETHEUS / "rules_test.yml").read_text())
    result = promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "AgptCaptureToVerdictSlow" in result.stdout + result.stderr


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_has_severity_summary_and_what_to_check(alert):
    assert alert["labels"]["severity"] in {"critical", "warning"}
    assert alert["annotations"]["summary"].strip()
    assert "Check" in alert["annotations"]["description"]


def test_every_alert_has_a_firing_and_a_silent_case():
    cases = load_yaml(PROMETHEUS / "rules_test.yml")["tests"]
    fires, silent = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fires == set(), "alerts without a case where they fire"
    assert names - silent == set(), "alerts without a case where they stay silent"


def test_the_issue_alert_list_is_covered():
    names = {a["alert"] for a in alerts()}
    assert names >= {
        "AgptCaptureToVerdictSlow", "AgptVerdictErrorRatioHigh", "AgptConsumerLagGrowing",
        "AgptCameraSilent", "AgptAnomalyRateDrift", "AgptDeadLetters",
        "AgptDatabaseWriteFailures", "AgptOffsetCommitFailures", "AgptPoolReloadFailures",
        "AgptWorkerDown", "AgptWorkerNotReady",
    }


def test_readme_alerts_table_lists_every_alert():
    readme = (PROMETHEUS.parents[1] / "README.md").read_text()
    table = readme.split("## Alerts", 1)[1].split("\n## ", 1)[0]
    for alert in alerts():
        assert f"| `{alert['alert']}` | {alert['labels']['severity']} |" in table


def test_alertmanager_config_passes_amtool():
    result = amtool("check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("severity", "receiver"), [("critical", "oncall-pager"),
                                                    ("warning", "team-tickets")])
def test_alerts_route_by_severity(severity, receiver):
    for alert in alerts():
        if alert["labels"]["severity"] != severity:
            continue
        result = amtool("config", "routes", "test", "--config.file=alertmanager.yml",
                        f"severity={severity}", f"alertname={alert['alert']}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == receiver, alert["alert"]
