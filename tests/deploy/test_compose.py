"""deploy/compose.yaml (+ the CPU override) against the vendored compose-spec JSON schema.

No Docker engine here (`docker compose config` needs one); the schema is the compose-spec
project's own, vendored in deploy/schemas so nothing is downloaded at test time.
"""

import json
import re

import jsonschema
import pytest
import yaml

from tests.deploy.tools import DEPLOY, SCHEMAS


class _Reset:
    """compose's `!reset` tag: the override removes the base's value."""


class ComposeLoader(yaml.SafeLoader):
    """PyYAML with compose's `!reset` and `!override` tags."""


ComposeLoader.add_constructor("!reset", lambda loader, node: _Reset())
ComposeLoader.add_constructor(
    "!override", lambda loader, node: loader.construct_object(node.value, deep=True)
    if isinstance(node, yaml.ScalarNode) else
    (loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
     else loader.construct_mapping(node, deep=True)))


def load(name):
    return yaml.load((DEPLOY / name).read_text(), Loader=ComposeLoader)  # noqa: S506


def merge(base, override):
    """compose's merge for what our override uses: mappings deep, `!reset` removes."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, _Reset):
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def interpolate(node):
    """${VAR:-default} -> default (what compose does with the variable unset)."""
    if isinstance(node, dict):
        return {k: interpolate(v) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v) for v in node]
    if isinstance(node, str):
        return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", node)
    return node


def without_resets(node):
    if isinstance(node, dict):
        return {k: without_resets(v) for k, v in node.items() if not isinstance(v, _Reset)}
    return node


@pytest.fixture(scope="module")
def validator():
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema)


def errors(validator, document):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def compose():
    return interpolate(load("compose.yaml"))


@pytest.fixture(scope="module")
def cpu_compose(compose):
    return merge_services(compose, interpolate(load("compose.cpu.yaml")))


def merge_services(base, override):
    merged = dict(base)
    merged["services"] = dict(base["services"])
    for name, service in override["services"].items():
        merged["services"][name] = merge(base["services"][name], service)
    return merged


def test_compose_file_matches_the_schema(validator, compose):
    assert errors(validator, compose) == []


def test_cpu_override_alone_and_merged_match_the_schema(validator, cpu_compose):
    assert errors(validator, without_resets(load("compose.cpu.yaml"))) == []
    assert errors(validator, cpu_compose) == []


def test_the_schema_catches_mistakes(validator, compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_done"
    assert errors(validator, broken)
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["helthcheck"] = broken["services"]["worker"].pop("healthcheck")
    assert errors(validator, broken)


def test_the_stack_has_every_part(compose):
    assert set(compose["services"]) >= {
        "kafka", "postgres", "migrate", "worker", "assistant", "dashboard", "prometheus",
        "alertmanager", "grafana"}
    assert "broker,controller" in compose["services"]["kafka"]["environment"][
        "KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        one_shot = service.get("restart") == "no"
        assert one_shot or "healthcheck" in service, name


def test_migrations_must_succeed_before_anything_uses_the_database(compose):
    for name in ("worker", "assistant", "dashboard"):
        depends = compose["services"][name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert compose["services"]["migrate"]["command"] == ["db", "upgrade"]


def test_workers_reserve_a_gpu_and_the_cpu_override_removes_it(compose, cpu_compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    cpu_worker = cpu_compose["services"]["worker"]
    assert "devices" not in cpu_worker["deploy"]["resources"]["reservations"]
    assert cpu_worker["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert cpu_worker["environment"]["AGPT_DEVICE"] == "cpu"


def test_worker_grace_period_is_longer_than_a_batch(compose):
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert int(grace.rstrip("s")) >= 30


def test_mounted_files_exist(compose):
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    for name, secret in compose["secrets"].items():
        assert name in (DEPLOY / "secrets" / "make-secrets.sh").read_text()
        assert secret["file"].startswith("./secrets/")


def test_prometheus_scrapes_the_compose_worker_service(compose):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "agpt-worker")
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    assert "worker" in compose["services"]
