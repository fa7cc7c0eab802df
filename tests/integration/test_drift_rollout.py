"""A DriftMonitor while its ModelDeployment rolls out a new model: pods of the old model
and of the new one serve side by side (a Deployment's rolling update), each with its own
reference bins and its own model version. The monitor judges the model it watches, the
new one: its inputs on the new model's reference, its quality on the new version's
counters; the old pods' histograms, on other edges, are not read as the new model's
(no SourceInvalid)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubeloop.controllers.driftverdict import reference_hash
from kubeloop.modeldir import LoadedModel, load_model
from tests.canarybed import Fleet
from tests.kubetest import Cluster, wait_for
from tests.modelserver import free_port, shifted_rows, train

DM, MD = "DriftMonitor", "ModelDeployment"
OLD, NEW = "s3://models/iris/old", "s3://models/iris/new"
MIN_SAMPLES = 30


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    root = tmp_path_factory.mktemp("rollout")
    # Trained on other data: other bin edges in its profile, another version.
    return {OLD: load_model(train(root / "old")), NEW: load_model(train(root / "new", shift=2.0))}


@pytest.fixture
def fleet(cluster: Cluster, namespace: str, models: dict[str, LoadedModel]) -> Iterator[Fleet]:
    rows: np.ndarray = shifted_rows(300, 0.0, seed=3)
    with Fleet(cluster, namespace, "iris", free_port(), models[OLD], rows) as bed:
        bed.serve(NEW, models[NEW])
        yield bed


def serving(cluster: Cluster, fleet: Fleet) -> dict[str, int]:
    """Ready pods with a model server, by the model they serve."""
    ready = set(fleet.ready_addresses())
    out: dict[str, int] = {}
    for pod in fleet._pods():
        if fleet.addresses.get(pod.metadata.uid) in ready:
            uri = (pod.metadata.annotations or {}).get("kubeloop.io/model-uri", "")
            out[uri] = out.get(uri, 0) + 1
    return out


def judged(cluster: Cluster, ns: str, version: str) -> dict[str, Any] | None:
    """The monitor's status once a window of `version`'s answers was judged."""
    status = cluster.status(DM, ns, "watch")
    perf = status.get("performance") or {}
    full = (status.get("samples") or 0) >= MIN_SAMPLES and status.get("drifted") is not None
    return status if perf.get("version") == version and full else None


def test_old_and_new_pods_side_by_side_are_each_counted_as_their_own_model(
    cluster: Cluster, fleet: Fleet, models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    ns = fleet.namespace
    cluster.create(
        MD, ns, "iris", {"model": {"uri": OLD}, "replicas": 2, "runtime": {"port": fleet.port}}
    )
    wait_for(lambda: serving(cluster, fleet) == {OLD: 2}, 40, "2 pods of the old model")
    fleet.sending.set()
    cluster.create(
        DM,
        ns,
        "watch",
        {
            "modelDeployment": "iris",
            "method": "psi",
            "interval": "1s",
            "minSamples": MIN_SAMPLES,
            # Judged on the estimated accuracy (no labels needed); never acts here.
            "performance": {"source": "estimated", "minimum": 0.01},
        },
    )
    old_version, new_version = (models[u].metadata.version for u in (OLD, NEW))
    assert old_version != new_version
    wait_for(lambda: judged(cluster, ns, old_version), 30, "a window of the old model judged")

    # Hold the rolling update: a new pod is Ready at once on kwok, but counts as available
    # (and lets an old pod go) only after 300 s, longer than every wait below, so old and
    # new pods serve together for the whole test.
    cluster.apps.patch_namespaced_deployment("iris", ns, {"spec": {"minReadySeconds": 300}})
    cluster.patch_spec(MD, ns, "iris", {"model": {"uri": NEW}})
    wait_for(
        lambda: (s := serving(cluster, fleet)).get(NEW) and s.get(OLD) == 2,
        30,
        "pods of both models serving",
    )
    try:
        status = wait_for(
            lambda: judged(cluster, ns, new_version), 20, "a window of the new model judged"
        )
    except AssertionError as err:
        last = cluster.status(DM, ns, "watch")
        raise AssertionError(f"{err}; phase {last.get('phase')}: {last.get('message')}") from None
    assert serving(cluster, fleet).get(OLD) == 2, "the old pods were gone before the judgement"
    new_profile = models[NEW].profile
    assert new_profile is not None
    assert status["window"]["reference"] == reference_hash(new_profile)
    source = cluster.condition(DM, ns, "watch", "SourceReady")
    assert source is not None and source["status"] == "True", source
    assert "2 pods of another model" in source["message"], source
    assert "SourceInvalid" not in cluster.event_reasons(ns, "watch")
