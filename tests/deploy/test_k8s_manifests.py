"""deploy/k8s: overlays render (kustomize subset, checked against `kubectl kustomize` where it
exists), every manifest validates (kubernetes-validate, strict; the KEDA ScaledObject and the
ServiceMonitor against their vendored CRD schemas), and the pieces fit together."""

from __future__ import annotations

import copy
import shutil
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

from agpt.settings import Settings
from inference.worker import WorkerConfig
from tests.deploy.kustomize import render
from tests.deploy.tools import DEPLOY, SCHEMAS, load_yaml, load_yaml_all

K8S = DEPLOY / "k8s"
OVERLAYS = ["cpu", "gpu"]
CRDS = {("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
        ("monitoring.coreos.com/v1", "ServiceMonitor"):
        "monitoring.coreos.com_servicemonitors.yaml"}


def key(resource):
    return (resource["kind"], resource["metadata"].get("namespace"),
            resource["metadata"]["name"])


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request):
    """(overlay name, {(kind, namespace, name): resource})."""
    resources = render(K8S / "overlays" / request.param)
    by_key = {key(r): r for r in resources}
    assert len(by_key) == len(resources), "duplicate resources"
    return request.param, by_key


def find(resources, kind, name):
    return next(r for (k, _, n), r in resources.items() if k == kind and n == name)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: the "
                    "Python kustomize subset renders alone")
@pytest.mark.parametrize("name", OVERLAYS)
def test_python_rendering_equals_kubectl_kustomize(name):
    result = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / name)],
                            capture_output=True, text=True, timeout=60, check=True)
    theirs = {key(r): r for r in yaml.safe_load_all(result.stdout) if r}
    ours = {key(r): r for r in render(K8S / "overlays" / name)}
    assert set(ours) == set(theirs)
    for k in ours:
        assert ours[k] == theirs[k], k


def crd_schema(filename):
    crd = load_yaml(SCHEMAS / filename)
    version = next(v for v in crd["spec"]["versions"] if v["served"])
    return closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def closed(schema):
    """Unknown fields become errors (the API server would prune them silently)."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            closed(value)
    elif isinstance(schema, list):
        for value in schema:
            closed(value)
    return schema


def validate(resource):
    crd = CRDS.get((resource["apiVersion"], resource["kind"]))
    if crd is not None:
        jsonschema.validate(resource, crd_schema(crd))
    else:
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(),
                                     strict=True)


def test_every_manifest_validates(overlay):
    _, resources = overlay
    for resource in resources.values():
        validate(resource)


def test_the_example_secret_validates():
    for resource in load_yaml_all(K8S / "secrets.example.yaml"):
        validate(resource)


def test_validation_catches_mistakes(overlay):
    _, resources = overlay
    worker = copy.deepcopy(find(resources, "Deployment", "agpt-worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(worker)
    scaled = copy.deepcopy(find(resources, "ScaledObject", "agpt-worker"))
    scaled["spec"]["maxReplicas"] = 6
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def test_overlays_differ_in_gpu_requests(overlay):
    name, resources = overlay
    container = find(resources, "Deployment", "agpt-worker")["spec"]["template"]["spec"][
        "containers"][0]
    gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert (gpus == "1") == (name == "gpu")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AGPT_DEVICE"] == ("cuda" if name == "gpu" else "cpu")
    assert container["image"].endswith(":cuda" if name == "gpu" else ":cpu")


def test_worker_probes_and_graceful_termination(overlay):
    _, resources = overlay
    pod = find(resources, "Deployment", "agpt-worker")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Longer than a batch plus the longest database retry back-off (the stop cuts it short,
    # but a batch in flight finishes first).
    assert pod["terminationGracePeriodSeconds"] > WorkerConfig().retry_max_s + 60


def test_keda_scales_on_the_groups_lag_up_to_the_partitions(overlay):
    _, resources = overlay
    config = find(resources, "ConfigMap", "agpt-config")["data"]
    scaled = find(resources, "ScaledObject", "agpt-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "agpt-worker"
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    defaults = Settings()
    assert meta["consumerGroup"] == config["AGPT_CONSUMER_GROUP"] == defaults.consumer_group
    assert meta["topic"] == config["AGPT_FRAMES_TOPIC"] == defaults.frames_topic
    assert meta["bootstrapServers"] == config["AGPT_KAFKA_BOOTSTRAP"]
    assert scaled["maxReplicaCount"] == int(config["AGPT_FRAME_PARTITIONS"])
    assert scaled["minReplicaCount"] >= 1  # AgptNoWorkers pages when none runs
    compose = (DEPLOY / "compose.yaml").read_text()
    assert f"AGPT_FRAME_PARTITIONS:-{scaled['maxReplicaCount']}" in compose


def pods(resources):
    """{workload name: pod template labels} of Deployments and Jobs."""
    return {r["metadata"]["name"]: r["spec"]["template"]["metadata"]["labels"]
            for r in resources.values() if r["kind"] in ("Deployment", "Job")}


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_selectors_match_pods_and_ports(overlay):
    _, resources = overlay
    labels = pods(resources)
    for resource in resources.values():
        if resource["kind"] == "Service":
            matched = [n for n, lab in labels.items()
                       if selects({"matchLabels": resource["spec"]["selector"]}, lab)]
            assert matched, resource["metadata"]["name"]
            workload = find(resources, "Deployment", matched[0])
            ports = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
            for port in resource["spec"]["ports"]:
                assert port["targetPort"] in ports
        if resource["kind"] == "PodDisruptionBudget":
            assert [n for n, lab in labels.items() if selects(resource["spec"]["selector"], lab)
                    ] == ["agpt-worker"]


def test_service_monitor_scrapes_the_worker_service_as_job_agpt_worker(overlay):
    _, resources = overlay
    monitor = find(resources, "ServiceMonitor", "agpt-worker")["spec"]
    service = find(resources, "Service", "agpt-worker")
    # prometheus-operator names the job after the Service: rules.yml selects job="agpt-worker".
    assert selects(monitor["selector"], service["metadata"]["labels"])
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert 'job="agpt-worker"' in (DEPLOY / "prometheus" / "rules.yml").read_text()


def egress_allowed(resources, port):
    """Workloads whose pods may open connections to ``port`` under the NetworkPolicies."""
    allowed = set()
    for name, labels in pods(resources).items():
        for policy in resources.values():
            if policy["kind"] != "NetworkPolicy" or not selects(policy["spec"]["podSelector"],
                                                                labels):
                continue
            for rule in policy["spec"].get("egress", []):
                if any(p["port"] == port for p in rule.get("ports", [])):
                    allowed.add(name)
    return allowed


def test_network_policies_limit_database_and_kafka(overlay):
    _, resources = overlay
    deny = find(resources, "NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert egress_allowed(resources, 5432) == {"agpt-worker", "agpt-migrate", "agpt-assistant",
                                               "agpt-dashboard"}
    assert egress_allowed(resources, 9092) == {"agpt-worker", "agpt-assistant"}
    assert egress_allowed(resources, 9093) == {"agpt-worker", "agpt-assistant"}


def test_containers_run_as_non_root_with_config_and_secrets(overlay):
    _, resources = overlay
    secret = load_yaml_all(K8S / "secrets.example.yaml")[0]
    config = find(resources, "ConfigMap", "agpt-config")["data"]
    for value in config.values():
        if value.startswith("/run/secrets/agpt/"):
            assert value.removeprefix("/run/secrets/agpt/") in secret["stringData"], value
    for resource in resources.values():
        if resource["kind"] not in ("Deployment", "Job"):
            continue
        pod = resource["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert volumes["credentials"]["secret"]["secretName"] == secret["metadata"]["name"]
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"]
            assert container["envFrom"][0]["configMapRef"]["name"] == "agpt-config"


def test_migration_job_runs_db_upgrade_in_the_slim_image(overlay):
    _, resources = overlay
    container = find(resources, "Job", "agpt-migrate")["spec"]["template"]["spec"][
        "containers"][0]
    assert container["args"] == ["db", "upgrade"]
    assert "agpt-slim" in container["image"]
