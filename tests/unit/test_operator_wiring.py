"""The Kopf wiring: every handler is an event handler, so the diff base Kopf would
build on every event (a deep copy of the body) can be skipped without changing what
any handler sees."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import kopf
from kopf._cogs.structs import bodies, diffs

from kubeloop.controllers.batchprediction_plan import POD as BATCH_POD
from kubeloop.controllers.retrain_render import EVAL_POD
from kubeloop.controllers.runtime import Store
from kubeloop.names import BATCH_PREDICTION_LABEL, EVALUATION_LABEL, TRAINING_JOB_LABEL
from kubeloop.operator import (
    NoDiffBase,
    _deliverer,
    _dispatcher,
    build_registry,
    configure,
    wire,
)


def test_only_event_handlers_are_registered() -> None:
    registry = build_registry({})
    assert registry._watching.get_all_handlers(), "no event handlers at all"
    # Change and daemon handlers would read the diff base that NoDiffBase never builds.
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()


def test_the_configured_diff_base_builds_nothing() -> None:
    settings = kopf.OperatorSettings()
    configure(settings)
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, NoDiffBase)
    body: dict[str, Any] = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "a", "namespace": "n", "annotations": {"x": "y"}},
        "spec": {"image": "i:1"},
    }
    wrapped = bodies.Body(body)
    assert storage.build(body=wrapped) is None
    assert storage.fetch(body=wrapped) is None
    # What Kopf computes from them: no diff, as for an unchanged object.
    assert diffs.diff(None, None) == ()


def test_kopf_calls_one_handler_per_watched_resource_and_only_for_kubeloops_kinds() -> None:
    """Kopf's invocation costs per handler: TrainingJobs are watched for two kinds,
    but Kopf gets one handler for each resource. The built-in resources (Pods, Jobs
    for three kinds) are followed by watching.py."""
    wiring = wire({})
    handlers = wiring.registry._watching.get_all_handlers()
    resources = [(h.selector.group, h.selector.version, h.selector.any_name) for h in handlers]
    assert len(resources) == len(set(resources)), resources
    assert ("kubeloop.io", "v1alpha1", "trainingjobs") in resources
    assert {group for group, _, _ in resources} == {"kubeloop.io"}, resources
    own = {(api_version, kind): selector for api_version, kind, _, selector in wiring.own}
    assert own[("v1", "Pod")] == own[("batch/v1", "Job")] == "app.kubernetes.io/managed-by=kubeloop"
    assert own[("v1", "Node")] is None  # capacity: every node
    assert {"Service", "Deployment", "HorizontalPodAutoscaler"} <= {k for _, k in own}


class _Queue:
    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, key: Any, **_: Any) -> None:
        self.added.append(key)


def _pod(name: str, label: str, owner: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "n", "labels": {label: owner}},
        "spec": {},
        "status": {"phase": "Running"},
    }


def test_a_pod_event_reaches_every_kind_that_watches_pods() -> None:
    own = wire({}).own
    handlers = next(h for (_, kind, _, _), h in own.items() if kind == "Pod")
    store, queue = Store(), _Queue()
    memo = SimpleNamespace(ctx=SimpleNamespace(store=store, queue=queue))
    deliver = _deliverer("Pod", handlers, memo)
    for pod in (
        _pod("train-0", TRAINING_JOB_LABEL, "train"),
        _pod("score-0", BATCH_PREDICTION_LABEL, "score"),
        _pod("eval-0", EVALUATION_LABEL, "watch"),
    ):
        asyncio.run(deliver({"type": "ADDED", "object": pod}))
    assert [key[0] for key in queue.added] == ["TrainingJob", "BatchPrediction", "DriftMonitor"]
    assert store.owned("Pod", "n", "train")
    assert store.owned(BATCH_POD, "n", "score")
    assert store.owned(EVAL_POD, "n", "watch")


def test_a_failing_handler_does_not_keep_the_event_from_the_others() -> None:
    seen: list[str] = []

    async def fails(**_: Any) -> None:
        seen.append("fails")
        raise RuntimeError("boom")

    async def works(**_: Any) -> None:
        seen.append("works")

    asyncio.run(_dispatcher("pods", [fails, works])(event={}, memo=None))
    assert seen == ["fails", "works"]
