"""The subset of kustomize that deploy/k8s uses, so overlays render without the binary.

Supported: ``resources`` (files, or folders with a kustomization.yaml), ``namespace``,
``images`` (newName/newTag) and ``patches`` with an inline JSON 6902 patch and a
kind/name target. Anything else in a kustomization raises, so a new feature in the
manifests cannot be silently ignored. tests/deploy/test_k8s_manifests.py renders every overlay
with it and, where ``kubectl`` exists, checks it renders exactly what ``kubectl kustomize`` does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PersistentVolume", "StorageClass"}


class KustomizeError(ValueError):
    """A kustomization uses something this renderer does not implement."""


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources of the kustomization in ``folder``, transformed."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        msg = f"{folder}: unsupported kustomization fields {sorted(unknown)}"
        raise KustomizeError(msg)
    resources: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            resources += render(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in spec.get("patches", []):
        _apply_patch(resources, patch, folder)
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for resource in resources:
            _set_image(resource, image)
    return resources


def _apply_patch(resources: list[dict], patch: dict, folder: Path) -> None:
    if set(patch) - {"target", "patch"} or set(patch["target"]) - {"kind", "name"}:
        msg = f"{folder}: only inline JSON 6902 patches with a kind/name target are supported"
        raise KustomizeError(msg)
    target = patch["target"]
    operations = yaml.safe_load(patch["patch"])
    matched = [r for r in resources
               if r["kind"] == target.get("kind", r["kind"])
               and r["metadata"]["name"] == target.get("name", r["metadata"]["name"])]
    if not matched:
        msg = f"{folder}: patch target {target} matches no resource"
        raise KustomizeError(msg)
    for resource in matched:
        for operation in operations:
            _json_patch(resource, operation)


def _json_patch(document: dict, operation: dict) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~")
             for p in operation["path"].lstrip("/").split("/")]
    parent: Any = document
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    op = operation["op"]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(parent, list):
        if op == "add":
            parent.insert(len(parent) if last == "-" else int(last), value)
        elif op == "replace":
            parent[int(last)] = value
        elif op == "remove":
            del parent[int(last)]
        else:
            raise KustomizeError(op)
        return
    if op == "add":
        parent[last] = value
    elif op == "replace":
        if last not in parent:
            msg = f"replace of missing {operation['path']}"
            raise KustomizeError(msg)
        parent[last] = value
    elif op == "remove":
        del parent[last]
    else:
        raise KustomizeError(op)


def _containers(resource: dict) -> list[dict]:
    spec = resource.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get(
        "spec", {}).get("template", {}).get("spec") or {}
    return pod.get("containers", []) + pod.get("initContainers", [])


def _set_image(resource: dict, image: dict) -> None:
    for container in _containers(resource):
        name, _, tag = container["image"].partition(":")
        if name != image["name"]:
            continue
        new_name = image.get("newName", name)
        new_tag = image.get("newTag", tag)
        container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
