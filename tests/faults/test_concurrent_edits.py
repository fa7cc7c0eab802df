"""Specs changed again and again while their reconciles run: the end state is the last
spec's, and the status says it observed the last generation."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.faults.conftest import MD, TJ, OperatorProcess, poll
from tests.kubetest import Cluster


def _edits(cluster: Cluster, kind: str, ns: str, name: str, changes: list[dict[str, Any]],
           seed: int) -> int:
    """Apply `changes` one after the other. After a random half of them, wait until the
    operator has observed that generation (so that it acts on the intermediate specs:
    suspends, resumes, scales); the others land right away, on reconciles in flight.
    Returns the generation after the last change."""
    rng = random.Random(seed)
    generation = 0
    for change in changes[:-1]:
        time.sleep(rng.uniform(0.0, 0.3))  # jitter of the edits, not a wait for anything
        generation = cluster.patch_spec(kind, ns, name, change)["metadata"]["generation"]
        if rng.random() < 0.5:
            poll(lambda g=generation: (cluster.status(kind, ns, name).get("observedGeneration")
                                       or 0) >= g,
                 30, f"{kind} {name} at generation {generation}", 0.05)
    generation = cluster.patch_spec(kind, ns, name, changes[-1])["metadata"]["generation"]
    return int(generation)


def _status_at(cluster: Cluster, kind: str, ns: str, name: str, generation: int,
               phase: str) -> dict[str, Any] | None:
    obj = cluster.get(kind, ns, name)
    status = obj.get("status") or {}
    if (
        obj["metadata"]["generation"] == generation
        and status.get("observedGeneration") == generation
        and status.get("phase") == phase
    ):
        return status
    return None


def test_suspend_flips_and_replica_changes_end_in_the_last_spec(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    rng = random.Random(42)
    # Training runs: `suspend` flipped 4 to 7 times. Three end resumed (and must run to
    # the end), one ends suspended (and must hold no pod).
    runs: dict[str, list[dict[str, Any]]] = {}
    for i, final in enumerate((False, False, False, True)):
        # Alternating from True (created False), so every edit is a new generation.
        flips = rng.choice((5, 7)) if final else rng.choice((4, 6))
        values = [k % 2 == 0 for k in range(flips)]
        assert values[-1] == final
        runs[f"edit-{i}"] = [{"suspend": v} for v in values]
    # Served models: replicas changed 5 times, each a new value (a new generation).
    serves: dict[str, list[dict[str, Any]]] = {}
    for i in range(2):
        counts: list[int] = []
        while len(counts) < 5:
            n = rng.randint(0, 4) if len(counts) < 4 else rng.randint(1, 4)
            if (counts or [1])[-1] != n:  # created with 1
                counts.append(n)
        serves[f"serve-{i}"] = [{"replicas": n} for n in counts]

    for name, changes in runs.items():
        long_run = changes[-1]["suspend"]  # a suspended run must not finish meanwhile
        cluster.create(TJ, namespace, name, {
            "image": "registry.local/train:1",
            "resources": {"cpu": "10m"},
            "output": {"uri": f"s3://models/{name}"},
            # Long enough to be still running while the edits land.
            "podMetadata": {"annotations": {
                "kubeloop.io/fake-duration": "120s" if long_run else "6s"}},
        })  # fmt: skip
    for name in serves:
        cluster.create(MD, namespace, name, {"model": {"uri": f"s3://models/{name}"},
                                             "replicas": 1})
    # The edits start once the operator works on every object (it may still be starting).
    for name in runs:
        cluster.wait_phase(TJ, namespace, name, "Running", 60)
    for name in serves:
        poll(lambda n=name: cluster.status(MD, namespace, n).get("observedGeneration") == 1,
             60, f"{name} reconciled")

    with ThreadPoolExecutor(len(runs) + len(serves)) as pool:
        futures = {
            (TJ, name): pool.submit(_edits, cluster, TJ, namespace, name, changes, rng.random())
            for name, changes in runs.items()
        } | {
            (MD, name): pool.submit(_edits, cluster, MD, namespace, name, changes, rng.random())
            for name, changes in serves.items()
        }
        generations = {key: future.result(240) for key, future in futures.items()}

    for name, changes in runs.items():
        generation = generations[(TJ, name)]
        assert generation == 1 + len(changes)
        job_name = f"{name}-r0"
        if changes[-1]["suspend"]:
            poll(lambda n=name, g=generation: _status_at(cluster, TJ, namespace, n, g, "Suspended"),
                 60, f"{name} suspended at generation {generation}")
            poll(lambda j=job_name: cluster.batch.read_namespaced_job(j, namespace).spec.suspend,
                 30, f"Job {job_name} suspended")
            poll(lambda n=name: not [
                p for p in cluster.core.list_namespaced_pod(
                    namespace, label_selector=f"kubeloop.io/training-job={n}").items
                if not p.metadata.deletion_timestamp
            ], 30, f"no pod of {name}")
        else:
            status = poll(
                lambda n=name, g=generation: _status_at(cluster, TJ, namespace, n, g, "Succeeded"),
                90, f"{name} succeeded at generation {generation}",
            )
            assert status["modelUri"] == f"s3://models/{name}"
            job = cluster.batch.read_namespaced_job(job_name, namespace)
            assert job.spec.suspend is False and job.status.succeeded == 1
        # Suspending never replaces the Job: the one Job of the one attempt.
        jobs = cluster.batch.list_namespaced_job(
            namespace, label_selector=f"kubeloop.io/training-job={name}"
        ).items
        assert [j.metadata.name for j in jobs] == [job_name]
        ready = cluster.condition(TJ, namespace, name, "Ready")
        assert ready and ready["observedGeneration"] == generation, ready

    for name, changes in serves.items():
        generation = generations[(MD, name)]
        want = changes[-1]["replicas"]
        assert generation == 1 + len(changes)

        def served(n: str = name, g: int = generation, w: int = want) -> dict[str, Any] | None:
            status = _status_at(cluster, MD, namespace, n, g, "Ready")
            dep = cluster.apps.read_namespaced_deployment(n, namespace) if status else None
            return status if (
                dep is not None
                and dep.spec.replicas == w
                and status is not None
                and status.get("replicas") == w
                and status.get("readyReplicas") == w
            ) else None

        try:
            status = poll(served, 90, f"{name} serving {want} replicas at generation {generation}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status: {cluster.status(MD, namespace, name)}") from None
        ready = cluster.condition(MD, namespace, name, "Ready")
        assert ready and ready["status"] == "True" and ready["observedGeneration"] == generation
    assert operator.alive, operator.tail()
