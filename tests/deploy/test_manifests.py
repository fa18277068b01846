"""Rendered manifests: kubernetes-validate (strict) for the oldest and newest supported
Kubernetes, and checkov's Kubernetes policies."""

from __future__ import annotations

import copy
from pathlib import Path

import checks
import pytest
import yaml


@pytest.mark.parametrize("version", checks.KUBE_VERSIONS)
@pytest.mark.parametrize("which", ["default", "dev", "prod"])
def test_kubernetes_validate(which: str, version: str, rendered: dict) -> None:
    checks.kube_validate(rendered[which], [version])


def test_chart_kube_version_matches_oldest_validated() -> None:
    chart = yaml.safe_load((checks.CHART_DIR / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={checks.KUBE_VERSIONS[0]}-0"


def test_checkov(rendered: dict, tmp_path: Path) -> None:
    # dev is left out on purpose: values-dev.yaml makes the root filesystem writable for Tilt.
    directory = checks.write_manifests(
        {"default": rendered["default"], "prod": rendered["prod"]}, tmp_path / "manifests"
    )
    checks.checkov(directory)


# ------------------------------------------------------------------ the checks bite


def dispatcher_of(docs: list[dict]) -> tuple[list[dict], dict]:
    docs = copy.deepcopy(docs)
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "dispatcher")
    return docs, dep


def test_kubernetes_validate_bites_on_unknown_field_and_kind(rendered: dict) -> None:
    docs, dep = dispatcher_of(rendered["default"])
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    docs.append({"apiVersion": "example.invalid/v1", "kind": "Widget", "metadata": {"name": "w"}})
    with pytest.raises(checks.CheckFailed, match=r"(?s)Deployment/dispatcher.*readinesProbe.*Widget"):
        checks.kube_validate(docs)


def test_kubernetes_validate_bites_on_removed_api(rendered: dict) -> None:
    docs = copy.deepcopy(checks.objects(rendered["default"], "HorizontalPodAutoscaler")["dispatcher"])
    docs["apiVersion"] = "autoscaling/v2beta2"  # removed in Kubernetes 1.26
    with pytest.raises(checks.CheckFailed, match="HorizontalPodAutoscaler/dispatcher"):
        checks.kube_validate([docs])


def test_checkov_bites(rendered: dict, tmp_path: Path) -> None:
    docs, dep = dispatcher_of(rendered["default"])
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    del c["livenessProbe"]
    del c["resources"]["limits"]
    c["securityContext"].update(
        readOnlyRootFilesystem=False, allowPrivilegeEscalation=True, runAsNonRoot=False
    )
    spec["securityContext"].update(runAsNonRoot=False, runAsUser=0)
    directory = checks.write_manifests({"broken": [dep]}, tmp_path / "manifests")
    with pytest.raises(checks.CheckFailed) as err:
        checks.checkov(directory)
    for check_id in ("CKV_K8S_8", "CKV_K8S_11", "CKV_K8S_13", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23"):
        assert f"{check_id} " in str(err.value), f"{check_id} did not fire:\n{err.value}"
