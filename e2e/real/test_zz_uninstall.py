"""`helm uninstall` leaves nothing of the chart behind (run last: the other tests need
the operator). The CRDs stay, as Helm never deletes its `crds/` (documented in
docs/install.md); the release namespace stays, as `--create-namespace` made it."""

from __future__ import annotations

import json
from typing import Any

import yaml

from e2e.real.conftest import RELEASE, SYSTEM_NS, helm
from tests.kubetest import Cluster, wait_for


def test_helm_uninstall_leaves_nothing_behind(
    cluster: Cluster, operator_pod: dict[str, Any]
) -> None:
    manifest = helm(cluster, "get", "manifest", RELEASE, "-n", SYSTEM_NS).stdout
    objects = [(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
               for doc in yaml.safe_load_all(manifest) if doc]
    assert {"Deployment", "ServiceAccount", "ClusterRole"} <= {kind for kind, _, _ in objects}
    helm(cluster, "uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "120s")

    def leftovers() -> list[str]:
        left = []
        for kind, name, namespace in objects:
            where = ["-n", namespace] if namespace else []
            got = cluster.kubectl("get", kind, name, *where, "-o", "name", check=False)
            if "NotFound" not in got.stderr:
                left.append(f"{kind}/{name}: {got.stdout.strip() or got.stderr.strip()}")
        return left

    wait_for(lambda: not leftovers(), 90, "every object of the release gone")

    def pods() -> list[str]:
        items = json.loads(cluster.kubectl("get", "pods", "-n", SYSTEM_NS, "-o", "json").stdout)
        return [p["metadata"]["name"] for p in items["items"]]

    # The Deployment's pods go by garbage collection after it: wait for them too.
    wait_for(lambda: not pods(), 90, f"no pod left in {SYSTEM_NS}")
