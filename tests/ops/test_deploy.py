"""Deployment files: Dockerfiles pass hadolint; the Kubernetes base validates offline against a
current Kubernetes (kubernetes-validate, strict) and keeps the probes, volumes and GPU requests
the operators' guide relies on."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "deploy" / "docker").glob("Dockerfile.*"))
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
K8S_OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "region"
K8S_POSTGRES = ROOT / "deploy" / "k8s" / "overlays" / "postgresql"
K8S_VERSION = "1.37.0"  # the newest schema kubernetes-validate ships; bump with it


def _tool(name: str) -> str:
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(exe).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing (pip install -e '.[dev]'): CI must run this check")
        pytest.skip(f"{name} not installed")
    return exe


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path):
    result = _hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_images_exist_and_the_node_takes_its_base_as_an_argument():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.coordinator", "Dockerfile.node"]
    node = (ROOT / "deploy" / "docker" / "Dockerfile.node").read_text()
    assert "ARG BASE=python:3.11-slim-bookworm" in node and "FROM ${BASE}" in node
    assert 'VOLUME ["/state"]' in node and "SWARM_STATE_DIR=/state" in node  # the identity outlives the container


def test_hadolint_catches_an_unpinned_install(tmp_path: Path):
    """Guards the guard."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    result = _hadolint(bad)
    assert result.returncode != 0 and "DL3008" in result.stdout


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _resources() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(K8S_BASE.glob("*.yaml")) if p.name != "kustomization.yaml" for d in _documents(p)]


def test_kustomization_lists_exactly_the_resource_files():
    (kustomization,) = _documents(K8S_BASE / "kustomization.yaml")
    present = {p.name for p in K8S_BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(present)


@pytest.mark.parametrize("name, resource", _resources(), ids=lambda v: v if isinstance(v, str) else "")
def test_resource_validates_strictly_against_current_kubernetes(name: str, resource: dict[str, Any]):
    import kubernetes_validate  # a dev dependency, like pytest itself

    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_validation_rejects_a_misspelled_field():
    import kubernetes_validate

    resource = _documents(K8S_BASE / "coordinator-service.yaml")[0]
    resource["spec"]["prots"] = resource["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def _render(folder: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` where it exists (Debian has no kubectl: on a bare CI machine the checks
    of each base file above stand in for the base, and the overlay's references are checked below)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: each base file is validated on its own above")
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_rendered_base_validates():
    import kubernetes_validate

    rendered = _render(K8S_BASE)
    assert len(rendered) == len(_resources())
    for resource in rendered:
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "capaswarm"
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_region_overlay_refers_to_the_base():
    (overlay,) = _documents(K8S_OVERLAY / "kustomization.yaml")
    assert overlay["resources"] == ["../../base"]
    deleted = {yaml.safe_load(p["patch"])["metadata"]["name"] for p in overlay["patches"] if "$patch: delete" in p["patch"]}
    names = {d["metadata"]["name"] for _, d in _resources()}
    assert deleted <= names and deleted == {"capaswarm-coordinator", "capaswarm-ledger", "capaswarm-run"}


def test_rendered_region_overlay_is_nodes_only_and_validates():
    """Another region of the same swarm: nodes only, pointed at the one coordinator, dialable."""
    import kubernetes_validate

    rendered = _render(K8S_OVERLAY)
    assert sorted(d["kind"] for d in rendered) == ["PodDisruptionBudget", "Service", "StatefulSet"]
    for resource in rendered:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    (sts,) = [d for d in rendered if d["kind"] == "StatefulSet"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--coordinator=https://coordinator.example.org" in args and "--announce-maddrs=/ip4/$(HOST_IP)/tcp/31337" in args


def _by_kind() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for _, d in _resources() if d["kind"] != "Service"}


def test_coordinator_probes_and_ledger_volume():
    kinds = _by_kind()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert kinds["Deployment"]["spec"]["strategy"]["type"] == "Recreate"  # one SQLite writer at a time
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {kinds["PersistentVolumeClaim"]["metadata"]["name"]}
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/data"}  # the image's --db /data/ledger.sqlite3


def test_nodes_keep_identity_on_a_claim_request_gpus_and_have_a_budget():
    kinds = _by_kind()
    sts = kinds["StatefulSet"]["spec"]
    (container,) = sts["template"]["spec"]["containers"]
    (template,) = sts["volumeClaimTemplates"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[template["metadata"]["name"]] == env["SWARM_STATE_DIR"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] >= 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == container["resources"]["requests"]["nvidia.com/gpu"]
    pdb = kinds["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"] == sts["selector"]["matchLabels"] == sts["template"]["metadata"]["labels"]


def test_postgresql_overlay_runs_two_stateless_coordinators_from_one_secret():
    """Issue 27: the SQLite coordinator and its volume swapped for 2 replicas on a database URL from a
    Secret; each file validated offline (no kubectl here), the patches checked against the base."""
    import kubernetes_validate

    (overlay,) = _documents(K8S_POSTGRES / "kustomization.yaml")
    assert overlay["resources"] == ["../../base", "coordinator-deployment.yaml"]
    deleted = {yaml.safe_load(p["patch"])["metadata"]["name"] for p in overlay["patches"] if "$patch: delete" in p["patch"]}
    assert deleted == {"capaswarm-coordinator", "capaswarm-ledger"}
    assert deleted <= {d["metadata"]["name"] for _, d in _resources()}
    docs = {d["kind"]: d for d in _documents(K8S_POSTGRES / "coordinator-deployment.yaml")}
    for resource in docs.values():
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--db") + 1] == "$(SWARM_DATABASE_URL)"
    (env,) = container["env"]
    assert env["name"] == "SWARM_DATABASE_URL" and env["valueFrom"]["secretKeyRef"]["name"] == "capaswarm-coordinator"
    key_dir = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "run-key")
    assert args[args.index("--run-key-file") + 1] == key_dir + "/run.runkey"  # every replica signs with one key
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])  # stateless: the ledger is the database
    base_service = next(d for _, d in _resources() if d["kind"] == "Service" and d["metadata"]["name"] == "capaswarm-coordinator")
    assert base_service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
