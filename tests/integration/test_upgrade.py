"""An upgrade over objects that an older operator wrote: before 0.2 a DriftMonitor's
`status.retrains` was a count, now it is the list of retrains. The API server cannot
convert such a stored status for a server-side apply, so the operator moves the count
once; after that the monitor's status is written as usual."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.kubetest import ROOT, Cluster, InProcessOperator, wait_for

CRD = ROOT / "crds" / "kubeloop.io_driftmonitors.yaml"


def old_crd() -> dict[str, Any]:
    """Today's CRD with the 0.1 schema of `status.retrains`: an integer."""
    crd = yaml.safe_load(CRD.read_text())
    old = copy.deepcopy(crd)
    version = old["spec"]["versions"][0]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    status["retrains"] = {"type": "integer", "description": "TrainingJobs created so far."}
    return dict(old)


@pytest.fixture
def stopped(cluster: Cluster, operator: InProcessOperator) -> Iterator[InProcessOperator]:
    operator.stop()
    try:
        yield operator
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        if not operator.alive:
            operator.start()


def test_a_count_written_by_0_1_is_moved_and_status_written_again(
    cluster: Cluster, stopped: InProcessOperator
) -> None:
    namespace = cluster.new_namespace()
    try:
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            input=yaml.safe_dump(old_crd()),
        )
        cluster.create("DriftMonitor", namespace, "old", {"modelDeployment": "gone"})
        cluster.custom.patch_namespaced_custom_object_status(
            "kubeloop.io",
            "v1alpha1",
            namespace,
            "driftmonitors",
            "old",
            {"status": {"retrains": 2, "phase": "Healthy"}},
        )
        assert cluster.status("DriftMonitor", namespace, "old")["retrains"] == 2
        # The upgrade: the new CRD, then the new operator.
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        stopped.start()

        def written() -> dict[str, Any] | None:
            status = cluster.status("DriftMonitor", namespace, "old")
            ready = cluster.condition("DriftMonitor", namespace, "old", "Ready")
            return status if ready and ready["reason"] == "TargetNotFound" else None

        status = wait_for(written, 30, "the monitor's status written by the new operator")
        assert status["retrainCount"] == 2
        assert status.get("retrains", []) == []
        assert status["phase"] == "Pending"
    finally:
        cluster.delete_namespace(namespace)
