"""The shadow's planner (controllers/modeldeployment_shadow.py) on its own: its children,
when the stable mirrors to it, status.shadow's state and figures, ShadowCompared and its
Event, and the clean-up when `shadow:` goes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from kubeloop import conditions as c
from kubeloop.controllers import modeldeployment_plan as mp
from kubeloop.controllers.modeldeployment_shadow import shadow_plan
from kubeloop.serving.mirror import Mirror
from kubeloop.shadow.figures import ShadowSample, parse_shadow
from kubeloop.shadow.read import Reading
from tests.unit.test_planners_modeldeployment import V1, V2, body, deployment, observed, spec_of
from tests.unit.test_serving_shadow import CLASSIFIER

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
SHADOW = {"model": {"uri": V2}, "mirrorPercent": 20, "minSamples": 10}


def mirroring_stable(uri: str = V2) -> dict[str, Any]:
    stable = deployment(V1)
    stable["spec"]["template"] = {
        "metadata": {"annotations": {"kubeloop.io/shadow-model-uri": uri}}
    }
    return stable


def reading(agree: int, disagree: int, pods: int = 1, labels: int = 0) -> Reading:
    registry = CollectorRegistry()
    mirror = Mirror(registry, "iris", "http://s", 100, CLASSIFIER)  # type: ignore[arg-type]
    mirror.compare("a", ["0"] * agree, ["0"] * agree)
    mirror.compare("d", ["0"] * disagree, ["1"] * disagree)
    for row in range(labels):  # the stable right where they disagree
        mirror.label("d", row, 0)
    total = parse_shadow(generate_latest(registry).decode(), "iris")
    return Reading(total, pods, {}, NOW, V2)


def test_children_and_no_mirror_before_a_shadow_pod_was_ready() -> None:
    b = body(shadow=SHADOW)
    out = shadow_plan(spec_of(b), b, observed(stable=deployment(V1)), "img", None)
    kinds = sorted((ch.obj["kind"], ch.obj["metadata"]["name"]) for ch in out.apply)
    assert kinds == [("Deployment", "iris-shadow"), ("Service", "iris-shadow")]
    assert out.mirror is None
    assert out.status is not None and out.status.state == "Progressing"
    assert out.cond is not None and out.cond.reason == c.SHADOW_PROGRESSING


def test_the_stable_mirrors_once_a_shadow_pod_is_ready_and_keeps_mirroring() -> None:
    b = body(shadow=SHADOW)
    ready = observed(stable=deployment(V1), shadow=deployment(V2, 1, 1))
    out = shadow_plan(spec_of(b), b, ready, "img", None)
    assert out.mirror is not None and out.mirror.percent == 20
    assert out.mirror.url == "http://iris-shadow.ns.svc:8080"
    # The stable's pods mirror already: a shadow pod restarting does not stop it.
    restarting = observed(stable=mirroring_stable(), shadow=deployment(V2, 1, 0))
    assert shadow_plan(spec_of(b), b, restarting, "img", None).mirror == out.mirror
    # Through plan(): the stable's pods get the mirror's arguments.
    whole = mp.plan(spec_of(b), b, ready, "img", NOW)
    stable = next(ch.obj for ch in whole.apply if ch.obj["metadata"]["name"] == "iris")
    args = stable["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--shadow-url") + 1] == "http://iris-shadow.ns.svc:8080"


def test_too_few_samples_then_compared_with_one_event() -> None:
    b = body(shadow=SHADOW)
    world = observed(stable=mirroring_stable(), shadow=deployment(V2, 1, 1))
    few = shadow_plan(spec_of(b), b, world, "img", reading(6, 3))
    assert few.cond is not None and few.cond.reason == c.TOO_FEW_SAMPLES
    assert few.status is not None and few.status.state == "Comparing" and few.status.samples == 9
    assert not few.events and few.requeue_after is not None
    enough = shadow_plan(spec_of(b), b, world, "img", reading(8, 2))
    assert enough.cond is not None and enough.cond.status and enough.cond.reason == c.COMPARED
    assert enough.status is not None and enough.status.agreement == 0.8
    assert enough.status.summary == "agree 80.0% n=10"
    assert [e[1] for e in enough.events] == [c.SHADOW_COMPARED]
    after = body({"shadow": {"state": "Compared"}}, shadow=SHADOW)
    assert not shadow_plan(spec_of(after), after, world, "img", reading(9, 2)).events


def test_unreadable_pods_and_an_unresolved_model() -> None:
    b = body(shadow=SHADOW)
    world = observed(stable=mirroring_stable(), shadow=deployment(V2, 1, 1))
    nobody = Reading(ShadowSample(), 0, {"u": "connection refused"}, NOW, V2)
    out = shadow_plan(spec_of(b), b, world, "img", nobody)
    assert out.cond is not None and out.cond.reason == c.SHADOW_METRICS_UNAVAILABLE
    assert "connection refused" in out.cond.message
    waiting = body(shadow={"model": {"fromTrainingJob": {"name": "t"}}})
    out = shadow_plan(spec_of(waiting), waiting, observed(shadow=deployment(V2)), "img", None)
    assert out.status is not None and out.status.state == "Waiting" and out.mirror is None
    assert [d.name for d in out.delete] == ["iris-shadow"]


def test_removing_the_shadow_deletes_its_children() -> None:
    b = body()
    gone = observed(shadow=deployment(V2), shadow_service={"metadata": {"name": "iris-shadow"}})
    out = shadow_plan(spec_of(b), b, gone, "img", None)
    assert sorted((d.kind, d.name) for d in out.delete) == [
        ("Deployment", "iris-shadow"),
        ("Service", "iris-shadow"),
    ]
    assert out.status is None and out.cond is None and out.mirror is None
    assert shadow_plan(spec_of(b), b, observed(), "img", None).delete == []


def test_labels_give_the_paired_test_in_the_status_and_the_summary() -> None:
    b = body(shadow=SHADOW)
    world = observed(stable=mirroring_stable(), shadow=deployment(V2, 1, 1))
    out = shadow_plan(spec_of(b), b, world, "img", reading(8, 6, labels=6))
    assert out.status is not None and out.status.labelled is not None
    labelled = out.status.labelled
    assert (labelled.samples, labelled.champion_only_right, labelled.shadow_only_right) == (6, 6, 0)
    assert labelled.p_value == pytest.approx(2 * 0.5**6)
    assert out.status.summary == "agree 57.1% n=14 p=0.0313"
    dumped = out.status.model_dump(by_alias=True, exclude_none=True)
    assert dumped["labelled"]["pValue"] == labelled.p_value
