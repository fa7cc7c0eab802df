"""A DriftMonitor's shadow trial (`onDrift.shadow`) on the local control plane, operator
in-process: the retrained model set as the deployment's shadow through its annotation,
its spec untouched, and the trial's end cleaning up after itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.test_drift_loop import (  # noqa: F401  (fixtures)
    DM,
    MD,
    model_v1,
    monitor_spec,
    server,
)
from tests.integration.test_shadow import _deployment
from tests.kubetest import Cluster, wait_for
from tests.modelserver import ModelServer, shifted_rows, train


def test_a_retrain_on_shadow_trial_runs_through_the_annotation_and_is_rejected_unlabelled(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path  # noqa: F811
) -> None:
    """`onDrift.shadow`: the retrained model is set as the deployment's shadow through
    its `kubeloop.io/shadow-trial` annotation (the spec untouched), the deployment runs
    it as a shadow; with no labelled request before the trial's timeout it is Rejected
    (TooFewLabels), the annotation and the shadow go, and the champion keeps serving.
    The labelled verdicts are the unit tests' and e2e/real/test_shadow.py's (the nodes
    here are simulated: no pod mirrors)."""
    challenger = train(tmp_path / "trial-retrain-1", shift=2.0)
    champion = f"file://{model_v1}"
    cluster.create(MD, namespace, "iris", {"model": {"uri": champion}})
    cluster.wait_phase(MD, namespace, "iris", "Ready", 30)
    spec = monitor_spec(server, tmp_path)
    spec["onDrift"]["shadow"] = {"minLabelled": 20, "timeout": "25s"}
    cluster.create(DM, namespace, "trial", spec)
    wait_for(lambda: cluster.status(DM, namespace, "trial").get("window"), 20, "baseline")
    server.send(shifted_rows(300, shift=2.0))

    on_trial = wait_for(lambda: _retrain(cluster, namespace, "Shadowing"), 40, "on trial")
    uri = f"file://{challenger}"
    assert on_trial["modelUri"] == uri and on_trial["shadow"]["championUri"] == champion
    md = cluster.get(MD, namespace, "iris")
    note = json.loads(md["metadata"]["annotations"]["kubeloop.io/shadow-trial"])
    assert note["uri"] == uri and note["by"] == "DriftMonitor/trial"
    assert md["spec"]["model"]["uri"] == champion and "shadow" not in md["spec"]
    # The record and the condition are written in one status update: read it before the
    # shadow's Deployment, which may take longer than the trial's 25 s on a busy machine.
    accepted = cluster.condition(DM, namespace, "trial", "RetrainAccepted")
    assert accepted and accepted["status"] == "Unknown" and accepted["reason"] == "ShadowTrial"
    shadow = wait_for(lambda: _deployment(cluster, namespace, "iris-shadow"), 30, "the shadow")
    assert shadow.spec.template.spec.init_containers[0].args[1] == uri

    rejected = wait_for(lambda: _retrain(cluster, namespace, "Rejected"), 40, "rejected")
    assert rejected["shadow"]["reason"] == "TooFewLabels" and rejected["shadow"]["passed"] is False
    accepted = cluster.condition(DM, namespace, "trial", "RetrainAccepted")
    assert accepted and accepted["status"] == "False" and accepted["reason"] == "TooFewLabels"
    wait_for(lambda: _deployment(cluster, namespace, "iris-shadow") is None, 30, "shadow gone")
    md = cluster.get(MD, namespace, "iris")
    assert "kubeloop.io/shadow-trial" not in (md["metadata"].get("annotations") or {})
    assert md["spec"]["model"]["uri"] == champion and "shadow" not in md["spec"]
    assert cluster.status(MD, namespace, "iris")["activeModelUri"] == champion
    cluster.await_events(namespace, "trial", {"ShadowTrial", "Rejected"})


def _retrain(cluster: Cluster, namespace: str, result: str) -> dict[str, Any] | None:
    last = cluster.status(DM, namespace, "trial").get("lastRetrain") or {}
    return last if last.get("result") == result else None
