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
from kubeloop.operator import NoDiffBase, _dispatcher, build_registry, configure


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


def test_kopf_calls_one_handler_per_watched_resource() -> None:
    """Kopf's invocation costs per handler: Pods, Jobs and Services are watched for
    several kinds, but Kopf gets one handler for each resource."""
    handlers = build_registry({})._watching.get_all_handlers()
    resources = [(h.selector.group, h.selector.version, h.selector.any_name) for h in handlers]
    assert len(resources) == len(set(resources)), resources
    assert ("", "v1", "pods") in resources and ("batch", "v1", "jobs") in resources


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


def test_the_pods_handler_reaches_every_kind_that_watches_pods() -> None:
    pods = next(
        h for h in build_registry({})._watching.get_all_handlers()
        if h.selector.any_name == "pods"
    )
    store, queue = Store(), _Queue()
    memo = SimpleNamespace(ctx=SimpleNamespace(store=store, queue=queue))
    for pod in (
        _pod("train-0", TRAINING_JOB_LABEL, "train"),
        _pod("score-0", BATCH_PREDICTION_LABEL, "score"),
        _pod("eval-0", EVALUATION_LABEL, "watch"),
    ):
        asyncio.run(pods.fn(event={"type": "ADDED", "object": pod}, memo=memo))
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
