"""`helm uninstall` leaves nothing of the chart behind (run last: the other tests need
the operator)."""

from __future__ import annotations

import json
from typing import Any

from e2e.real.conftest import RELEASE, SYSTEM_NS, helm
from tests.kubetest import Cluster, wait_for


def test_helm_uninstall_leaves_nothing_behind(
    cluster: Cluster, operator_pod: dict[str, Any]
) -> None:
    helm(cluster, "uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "120s")
    selector = f"app.kubernetes.io/instance={RELEASE}"

    def leftovers() -> list[str]:
        out = cluster.kubectl(
            "get", "deployments,pods,services,serviceaccounts,roles,rolebindings,configmaps",
            "-n", SYSTEM_NS, "-l", selector, "-o", "json").stdout
        cluster_wide = cluster.kubectl(
            "get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "json").stdout
        return [f"{i['kind']}/{i['metadata']['name']}" for doc in (out, cluster_wide)
                for i in json.loads(doc)["items"]]

    wait_for(lambda: not leftovers(), 90, "nothing of the release left")
    pods = json.loads(cluster.kubectl("get", "pods", "-n", SYSTEM_NS, "-o", "json").stdout)
    assert pods["items"] == []
