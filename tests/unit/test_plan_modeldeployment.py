"""Why a ModelDeployment does not serve, in the cluster's own words, without a cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.controllers.modeldeployment import Observed, plan

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
URI = "pvc://models/flowers/v9"


def decide(pods: list[dict[str, Any]]) -> dict[str, Any]:
    body = {"apiVersion": "kubeloop.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"model": {"uri": URI}}, "status": {}}
    spec = ModelDeploymentSpec.model_validate(body["spec"])
    stable = {"metadata": {"name": "iris", "annotations": {}, "generation": 1},
              "spec": {"replicas": 1}, "status": {"observedGeneration": 1, "replicas": 1}}
    decided = plan(spec, body, Observed(stable, None, None, None, pods, {}), "img:1", NOW)
    return {cond.type: cond for cond in decided.conds} | {"phase": decided.status.phase}


def pod(status: dict[str, Any], track: str = "stable") -> dict[str, Any]:
    return {"metadata": {"name": "iris-7d9-x", "labels": {"kubeloop.io/track": track}},
            "status": status}


def test_pods_the_scheduler_cannot_place_quote_it() -> None:
    words = ('0/5 nodes are available: persistentvolumeclaim "nosuchclaim" not found.'
             " preemption: 0/5 nodes are available: 5 Preemption is not helpful.")
    seen = decide([pod({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": words}]})])
    assert seen["Available"].reason == "WaitingForScheduler"
    assert seen["Available"].message == f"pods pending: {words}"
    assert seen["Ready"].status is False and seen["Ready"].reason == "WaitingForScheduler"
    assert seen["phase"] == "Progressing"


def test_a_canary_pod_that_cannot_be_placed_is_not_the_stables_cause() -> None:
    seen = decide([pod({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "message": "0/5 nodes are available"}]},
        track="canary")])
    assert seen["Available"].reason == "MinimumReplicasUnavailable"


def test_a_failed_fetch_says_why_in_its_own_words() -> None:
    log = ("Traceback (most recent call last):\n" + "  frame\n" * 40
           + "FileNotFoundError: /mnt/pvc/models/flowers/v9/manifest.json:"
           " No such file or directory\n")
    seen = decide([pod({"phase": "Pending", "initContainerStatuses": [{
        "name": "fetch-model", "restartCount": 1,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": log}}}]})])
    message = seen["Available"].message
    assert seen["Available"].reason == "PodsCrashing" and seen["phase"] == "Failed"
    assert message.startswith("pod iris-7d9-x container fetch-model: CrashLoopBackOff: ")
    assert message.endswith("manifest.json: No such file or directory")
    assert "back-off" not in message and message.count("frame") < 10
