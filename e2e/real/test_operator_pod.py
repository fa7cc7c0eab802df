"""The chart's operator, from the image built offline, running as a pod on the real node."""

from __future__ import annotations

import json
from typing import Any

import requests

from e2e.real.conftest import IMAGE, RELEASE, SYSTEM_NS
from tests.kubetest import Cluster


def test_operator_pod_runs_the_built_image_and_is_ready_by_its_probes(
    cluster: Cluster, operator_pod: dict[str, Any]
) -> None:
    spec, status = operator_pod["spec"], operator_pod["status"]
    assert spec["nodeName"] == "kubeloop-node"
    container = spec["containers"][0]
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"
    # The kubelet ran the probes the chart declares: Ready means they answered.
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    state = status["containerStatuses"][0]
    assert state["ready"] and "running" in state["state"]
    assert state["imageID"], "containerd reports the image it ran"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["serviceAccountName"] == RELEASE
    # Its log is read through the kubelet: the operator started and watches.
    log = cluster.kubectl("logs", "-n", SYSTEM_NS, operator_pod["metadata"]["name"]).stdout
    assert log.strip(), "the operator pod logged nothing"
    # The process inside runs as the image's user, with no capabilities.
    ident = cluster.kubectl("exec", "-n", SYSTEM_NS, operator_pod["metadata"]["name"], "--",
                            "python", "-c",
                            "import os, json; print(json.dumps([os.getuid(), os.getgid(), "
                            "open('/proc/self/status').read().split('CapEff:')[1].split()[0]]))"
                            ).stdout
    assert json.loads(ident) == [10001, 10001, "0000000000000000"]
    # Its API requests carry the chart's ServiceAccount token (the identity RBAC judges).
    subject = cluster.kubectl(
        "exec", "-n", SYSTEM_NS, operator_pod["metadata"]["name"], "--", "python", "-c",
        "import base64, json; t = open('/var/run/secrets/kubernetes.io/serviceaccount/token')"
        ".read().split('.')[1]; print(json.loads(base64.urlsafe_b64decode(t + '==='))['sub'])",
    ).stdout.strip()
    assert subject == f"system:serviceaccount:{SYSTEM_NS}:{RELEASE}"
    # /metrics of the pod, on its own bridge address, from this machine.
    metrics = requests.get(f"http://{status['podIP']}:8080/metrics", timeout=10).text
    assert "kubeloop_workqueue_depth" in metrics
