"""The chart's ComputeTemplates: it installs the admission policies and the starter
menu; the operator, running as the chart's ServiceAccount (a refusal fails the session),
counts what fits on kwok's GPU nodes and runs a job that names a template; the policy
refuses one that asks for more."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from e2e.conftest import RELEASE, SYSTEM_NS, helm
from tests.kubetest import GROUP, ROOT, VERSION, Cluster, wait_for
from tests.rbac import release_refused

H100 = "NVIDIA-H100-80GB-HBM3"
CHART = ROOT / "charts" / "kubeloop"


@pytest.fixture
def starter_menu(cluster: Cluster, chart: str) -> Iterator[None]:
    """The session's release upgraded with the starter menu, and back without it.

    Helm's default watcher would also wait for the templates' first status write (their
    observedGeneration defaults to 0): the test waits for that itself, so that an
    operator that cannot write it fails the test, not this fixture's helm call."""
    helm(cluster, "upgrade", RELEASE, str(CHART), "--namespace", SYSTEM_NS, "--wait=legacy",
         "-f", str(CHART / "starter-templates.values.yaml"))
    release_refused(cluster, RELEASE, SYSTEM_NS, RELEASE)  # hack/rbac_necessity.py
    yield
    # Back without the menu: the watcher would wait on the templates it removes as well.
    helm(cluster, "upgrade", RELEASE, str(CHART), "--namespace", SYSTEM_NS, "--wait=legacy")


def test_the_chart_ships_the_policy_and_a_menu_the_operator_counts(
    cluster: Cluster, namespace: str, starter_menu: None
) -> None:
    policies = cluster.kubectl("get", "validatingadmissionpolicies,"
                               "validatingadmissionpolicybindings", "-o", "name").stdout.split()
    for plural in ("trainingjobs", "modeldeployments", "driftmonitors"):
        for name in (f"kubeloop-compute-template-{plural}", f"kubeloop-pod-security-{plural}",
                     f"kubeloop-pod-security-template-{plural}"):
            assert f"validatingadmissionpolicy.admissionregistration.k8s.io/{name}" in policies
            assert (f"validatingadmissionpolicybinding.admissionregistration.k8s.io/{name}"
                    in policies)

    def menu() -> dict[str, dict[str, object]] | None:
        items = cluster.custom.list_cluster_custom_object(GROUP, VERSION, "computetemplates")
        found = {t["metadata"]["name"]: t.get("status") or {} for t in items["items"]}
        starters = {k: v for k, v in found.items() if k in ("cpu-small", "gpu-1xh100",
                                                            "gpu-8xh100")}
        return starters if all("fitsNow" in s for s in starters.values()) else None

    counted = wait_for(menu, 60, "the starter templates counted")
    assert set(counted) == {"cpu-small", "gpu-1xh100", "gpu-8xh100"}
    # kwok's two GPU nodes hold 8 H100s each: 16 one-GPU pods, or 2 whole-node pods.
    assert counted["gpu-1xh100"]["fitsMax"] == 16
    assert counted["gpu-8xh100"]["fitsMax"] == 2
    table = cluster.kubectl("get", "computetemplates").stdout.splitlines()
    assert table[0].split() == ["NAME", "GPU", "CPU", "MEMORY", "FITS", "NOW", "IN", "USE", "AGE"]

    # A data scientist's run: image and a template name.
    cluster.create("TrainingJob", namespace, "tuned", {
        "image": "t:1", "compute": "gpu-1xh100", "output": {"uri": "s3://m/tuned"}})
    done = cluster.wait_phase("TrainingJob", namespace, "tuned", "Succeeded", 60)
    assert done["compute"]["name"] == "gpu-1xh100"
    assert done["compute"]["spec"]["gpu"] == {"count": 1, "type": H100,
                                              "resourceName": "nvidia.com/gpu"}

    greedy = json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob",
                         "metadata": {"name": "greedy", "namespace": namespace},
                         "spec": {"image": "t:1", "compute": "gpu-8xh100", "workers": 32}})
    # (The API server enforces a new policy a moment after it is created.)
    refused = wait_for(lambda: (r := cluster.kubectl("apply", "-f", "-", input=greedy,
                                                     check=False)).returncode != 0 and r,
                       30, "the greedy run refused")
    assert ("spec.workers is 32, more than ComputeTemplate gpu-8xh100 allows (maxWorkers 16)"
            in refused.stderr)
