"""Queued TrainingJobs admitted by the real Kueue (sigs.k8s.io/kueue, KUEUE_VERSION in
hack/versions.env, run by hack/kueue.py next to the local control plane).

A ClusterQueue holds 8 GPUs; two TrainingJobs of 8 GPUs each compete through one
LocalQueue. The simulated GPU nodes could run both at once (two nodes of 8): only
Kueue's quota keeps the second waiting. Kubeloop creates each Job suspended and must
never unsuspend one itself: Kueue does, on admission."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.kubetest import HOLD, ROOT, Cluster, stays, wait_for

TJ = "TrainingJob"
KUEUE = ("kueue.x-k8s.io", "v1beta2")
FLAVOR = "kubeloop-test-gpu"
CLUSTER_QUEUE = "kubeloop-test-gpus"
QUEUE = "team-a"


def kueue_cli(*args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "hack" / "kueue.py"), *args], check=True)


@pytest.fixture(scope="module")
def kueue(cluster: Cluster) -> Iterator[None]:
    """Kueue running, with a ResourceFlavor and a ClusterQueue of 8 GPUs for every
    namespace; stopped (its objects removed) after the module."""
    kueue_cli("install")
    kueue_cli("start")
    group, version = KUEUE
    remove_queues(cluster)  # left by an interrupted run
    cluster.custom.create_cluster_custom_object(
        group,
        version,
        "resourceflavors",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "ResourceFlavor",
            "metadata": {"name": FLAVOR},
        },
    )
    quota = {"cpu": "100", "memory": "1000Gi", "nvidia.com/gpu": "8"}
    cluster.custom.create_cluster_custom_object(
        group,
        version,
        "clusterqueues",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "ClusterQueue",
            "metadata": {"name": CLUSTER_QUEUE},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": list(quota),
                        "flavors": [
                            {
                                "name": FLAVOR,
                                "resources": [
                                    {"name": name, "nominalQuota": value}
                                    for name, value in quota.items()
                                ],
                            }
                        ],
                    }
                ],
            },
        },
    )
    try:
        yield
    finally:
        try:
            # Kueue's finalizers go only while it runs: wait for its objects to be gone
            # (the tests' namespaces, with their Workloads, are deleted by then).
            try:
                wait_for(
                    lambda: (
                        not cluster.custom.list_cluster_custom_object(group, version, "workloads")[
                            "items"
                        ]
                    ),
                    60,
                    "every Workload gone",
                )
            finally:
                remove_queues(cluster)
        finally:
            kueue_cli("stop")


def remove_queues(cluster: Cluster) -> None:
    """Delete the ClusterQueue and the ResourceFlavor, and wait until they are gone."""
    group, version = KUEUE
    for plural, name in (("clusterqueues", CLUSTER_QUEUE), ("resourceflavors", FLAVOR)):
        try:
            cluster.custom.delete_cluster_custom_object(group, version, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

        def gone(plural: str = plural, name: str = name) -> bool:
            try:
                cluster.custom.get_cluster_custom_object(group, version, plural, name)
            except ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            return False

        wait_for(gone, 60, f"{plural}/{name} gone")


def local_queue(cluster: Cluster, namespace: str) -> None:
    group, version = KUEUE
    cluster.custom.create_namespaced_custom_object(
        group,
        version,
        namespace,
        "localqueues",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "LocalQueue",
            "metadata": {"name": QUEUE, "namespace": namespace},
            "spec": {"clusterQueue": CLUSTER_QUEUE},
        },
    )


def training() -> dict[str, Any]:
    """A run that holds its 8 GPUs until the test releases it (`Cluster.release`)."""
    return {
        "image": "registry.local/train:1",
        "command": ["python", "train.py"],
        "gpu": {"count": 8},
        "scheduling": {"queueName": QUEUE},
        "podMetadata": {"annotations": HOLD},
    }


def job(cluster: Cluster, namespace: str, name: str) -> Any:
    jobs = cluster.batch.list_namespaced_job(
        namespace, label_selector=f"kubeloop.io/training-job={name}"
    ).items
    return jobs[0] if jobs else None


def workload_of(cluster: Cluster, namespace: str, job_name: str) -> dict[str, Any] | None:
    group, version = KUEUE
    for item in cluster.custom.list_namespaced_custom_object(
        group, version, namespace, "workloads"
    )["items"]:
        owners = item["metadata"].get("ownerReferences") or []
        if any(o["kind"] == "Job" and o["name"] == job_name for o in owners):
            return dict(item)
    return None


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return dict(cond)
    return {}


def suspend_owners(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(manager, operation) of every managedFields entry that owns spec.suspend."""
    owners = []
    for entry in entries:
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:suspend" in spec:
            owners.append((entry["manager"], entry["operation"]))
    return owners


class JobHistory:
    """Every version of the namespace's Jobs, from a watch opened before any exists:
    a write that was undone a moment later is still seen."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.versions: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self._stopping = False
        self._watch = watch.Watch()
        # From this resourceVersion on, every change is delivered, however late the
        # watch connects.
        since = cluster.batch.list_namespaced_job(namespace).metadata.resource_version
        self._thread = threading.Thread(
            target=self._run, args=(cluster, namespace, since), daemon=True
        )
        self._thread.start()

    def _run(self, cluster: Cluster, namespace: str, since: str) -> None:
        stream = self._watch.stream(
            cluster.batch.list_namespaced_job,
            namespace,
            label_selector="kubeloop.io/training-job",
            resource_version=since,
        )
        try:
            for event in stream:
                obj = event["raw_object"]
                self.versions.append(
                    {
                        "name": obj["metadata"]["name"],
                        "suspend": obj["spec"].get("suspend"),
                        "managedFields": obj["metadata"].get("managedFields") or [],
                    }
                )
        except Exception as exc:  # the connection closed by stop(), or a real failure
            if not self._stopping:
                self.error = exc

    def stop(self) -> None:
        """Stop watching; fails if the watch broke before (versions may be missing)."""
        self._stopping = True
        self._watch.stop()
        self._thread.join(10)
        assert self.error is None, f"the Job watch broke: {self.error!r}"


def test_kueue_admits_one_training_job_at_a_time_within_the_gpu_quota(
    cluster: Cluster, namespace: str, kueue: None
) -> None:
    local_queue(cluster, namespace)
    history = JobHistory(cluster, namespace)
    cluster.create(TJ, namespace, "first", training())
    cluster.wait_phase(TJ, namespace, "first", "Running", 60)
    first_job = job(cluster, namespace, "first")
    admitted = wait_for(
        lambda: (
            condition(
                workload_of(cluster, namespace, first_job.metadata.name) or {}, "Admitted"
            ).get("status")
            == "True"
        ),
        20,
        "the first Workload admitted by Kueue",
    )
    assert admitted

    cluster.create(TJ, namespace, "second", training())
    queued = cluster.wait_phase(TJ, namespace, "second", "Queued", 30)
    assert QUEUE in queued["message"]
    second_job = wait_for(lambda: job(cluster, namespace, "second"), 10, "the second Job")
    assert second_job.spec.suspend is True
    assert second_job.metadata.labels["kueue.x-k8s.io/queue-name"] == QUEUE
    pending = wait_for(
        lambda: (
            condition(
                workload_of(cluster, namespace, second_job.metadata.name) or {}, "QuotaReserved"
            )
            or None
        ),
        20,
        "Kueue's verdict on the second Workload",
    )
    assert pending["status"] == "False", pending
    assert "nvidia.com/gpu" in pending["message"], pending

    # While the first runs (held), the second waits: Queued, its Job suspended, no pod,
    # at every poll over a window. Only the first finishing frees the quota.
    def second_waits() -> bool:
        second = cluster.status(TJ, namespace, "second")
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector="kubeloop.io/training-job=second"
        ).items
        assert second.get("phase") == "Queued", second
        assert job(cluster, namespace, "second").spec.suspend is True
        assert not pods, [p.metadata.name for p in pods]
        return True

    stays(second_waits, 5, "the second TrainingJob waiting while the first runs")

    cluster.release(namespace, "first")
    cluster.wait_phase(TJ, namespace, "first", "Succeeded", 30)
    cluster.wait_phase(TJ, namespace, "second", "Running", 30)
    cluster.release(namespace, "second")
    cluster.wait_phase(TJ, namespace, "second", "Succeeded", 30)
    history.stop()
    # Kubeloop created both Jobs suspended and never unsuspended one: in every version of
    # each Job the watch saw (a change undone a moment later included), a Job that may
    # run (suspend false) owes it to Kueue alone. The last manager to change a field
    # owns it in managedFields.
    seen = {v["name"] for v in history.versions}
    assert {first_job.metadata.name, second_job.metadata.name} <= seen, seen
    for version in history.versions:
        if version["suspend"] is False:
            owners = suspend_owners(version["managedFields"])
            assert owners and all(m.startswith("kueue") for m, _ in owners), (
                version["name"],
                owners,
            )
    running = {v["name"] for v in history.versions if v["suspend"] is False}
    assert running == seen, f"Jobs never seen unsuspended: {seen - running}"
