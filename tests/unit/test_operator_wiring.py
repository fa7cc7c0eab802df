"""The Kopf wiring: every handler is an event handler, so the diff base Kopf would
build on every event (a deep copy of the body) can be skipped without changing what
any handler sees."""

from __future__ import annotations

from typing import Any

import kopf
from kopf._cogs.structs import bodies, diffs

from kubeloop.operator import NoDiffBase, build_registry, configure


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
