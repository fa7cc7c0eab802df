"""An operator restart writes nothing that was not true. Over settled resources of all
three namespaced kinds, the operator is restarted again and again, stopped at different
moments of its start: no resource is written (its resourceVersion stays) and no Event is
added. A reconcile on a half-filled store would write what is not true (a target "not
found", "no Deployment yet"); the store is filled from a list of every watched kind
before the first reconcile."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kubetest import Cluster, InProcessOperator, stays, wait_for
from tests.modelserver import ModelServer, free_port, train

TJ, MD, DM = "TrainingJob", "ModelDeployment", "DriftMonitor"
RESTARTS = 6


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    srv = ModelServer(train(tmp_path / "v1"), free_port())
    srv.start()
    yield srv
    srv.stop()


def versions(cluster: Cluster, namespace: str) -> dict[str, str]:
    return {
        kind: cluster.get(kind, namespace, name)["metadata"]["resourceVersion"]
        for kind, name in ((TJ, "done"), (MD, "iris"), (DM, "watch"))
    }


def events(cluster: Cluster, namespace: str) -> int:
    return len(cluster.core.list_namespaced_event(namespace).items)


def test_restarts_over_settled_resources_write_nothing(
    cluster: Cluster,
    namespace: str,
    operator: InProcessOperator,
    server: ModelServer,
    tmp_path: Path,
) -> None:
    cluster.create(
        TJ,
        namespace,
        "done",
        {
            "image": "registry.local/train:1",
            "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "1s"}},
        },
    )
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{server.model_dir}"}})
    cluster.create(
        DM,
        namespace,
        "watch",
        {
            "modelDeployment": "iris",
            "source": {"url": f"{server.url}/metrics"},
            "reference": {"url": f"{server.url}/v2/models/iris/profile"},
            "interval": "1h",  # no check falls due during the test: a due check writes
            "minSamples": 100,
        },
    )
    cluster.wait_phase(TJ, namespace, "done", "Succeeded", 60)
    cluster.wait_phase(MD, namespace, "iris", "Ready", 60)
    cluster.wait_phase(DM, namespace, "watch", "Collecting", 60)

    # Settled: nothing written for longer than the 10 s status throttle.
    def settled() -> dict[str, str] | None:
        before = (versions(cluster, namespace), events(cluster, namespace))
        try:
            stays(
                lambda: (versions(cluster, namespace), events(cluster, namespace)) == before,
                12,
                "settled",
            )
        except AssertionError:
            return None
        return before[0]

    snapshot = wait_for(settled, 90, "the resources settled")
    seen_events = events(cluster, namespace)

    rng = random.Random(7)
    for _ in range(RESTARTS):
        operator.stop()
        operator.start()
        # Stopped again at a different moment of its start each time (restart jitter:
        # nothing is waited for here).
        time.sleep(rng.uniform(0.0, 1.5))
    operator.stop()
    operator.start()

    stays(
        lambda: versions(cluster, namespace) == snapshot,
        15,
        "no resource written after the restarts",
    )
    assert events(cluster, namespace) == seen_events, [
        (e.reason, e.message) for e in cluster.core.list_namespaced_event(namespace).items
    ]
