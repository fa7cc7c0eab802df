"""The worked GitOps setups (docs/gitops/flux, docs/gitops/argocd) are what a user can
copy: every Kubeloop object in them is valid for its kind, every kustomization.yaml
names files that exist, the monitor runs the loop under GitOps (promoteWith:
Annotation), and the Flux and Argo CD setups sync the same models' directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubeloop.api.driftmonitor import DriftMonitorSpec
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.trainingjob import TrainingJobSpec
from tests.kubetest import ROOT

GITOPS = ROOT / "docs" / "gitops"
SPECS = {
    "TrainingJob": TrainingJobSpec,
    "ModelDeployment": ModelDeploymentSpec,
    "DriftMonitor": DriftMonitorSpec,
}


def objects(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(root.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_every_kubeloop_object_is_valid_and_the_loop_runs_beside_git() -> None:
    found = [d for _, d in objects(GITOPS / "flux") if d["apiVersion"] == "kubeloop.io/v1alpha1"]
    assert {d["kind"] for d in found} == set(SPECS)
    for doc in found:
        SPECS[doc["kind"]].model_validate(doc["spec"])
    (monitor,) = [DriftMonitorSpec.model_validate(d["spec"]) for d in found
                  if d["kind"] == "DriftMonitor"]
    assert monitor.on_drift.promote and monitor.on_drift.promote_with == "Annotation"


def test_kustomizations_name_files_that_exist_and_both_tools_sync_the_same_models() -> None:
    for path, doc in objects(GITOPS / "flux"):
        if doc.get("kind") == "Kustomization" and doc["apiVersion"].startswith("kustomize.config"):
            for name in doc["resources"]:
                assert (path.parent / name).is_file(), (path, name)
    flux = {d["metadata"]["name"]: d for _, d in objects(GITOPS / "flux" / "clusters")}
    assert flux["iris"]["spec"]["wait"] is True and flux["iris"]["spec"]["prune"] is True
    assert flux["iris"]["spec"]["dependsOn"] == [{"name": "infrastructure"}]
    assert (GITOPS / "flux" / flux["iris"]["spec"]["path"]).is_dir()
    argocd = {d["metadata"]["name"]: d for _, d in objects(GITOPS / "argocd")}
    assert argocd["iris"]["spec"]["source"]["path"] == flux["iris"]["spec"]["path"].lstrip("./")
    assert argocd["iris"]["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert argocd["kubeloop"]["spec"]["source"]["path"] == "charts/kubeloop"
    assert (ROOT / "charts" / "kubeloop" / "Chart.yaml").is_file()
