"""Progressive delivery on the local control plane: a canary moves step by step, or is
rolled back, on the live metrics of real model servers (tests/canarybed.py) that stand
at its pods' addresses; the operator runs in-process and reads them as it would pods."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes.client.exceptions import ApiException

from kubeloop.modeldir import LoadedModel, load_model
from tests.canarybed import Behaviour, Fleet
from tests.integration.test_route_crds import gateway_crds  # noqa: F401  (a fixture)
from tests.kubetest import Cluster, InProcessOperator, or_none, stays, wait_for
from tests.modelserver import ModelServer, free_port, shifted_rows, train

DM, MD = "DriftMonitor", "ModelDeployment"
V1, V2, V3 = "s3://models/iris/v1", "s3://models/iris/v2", "s3://models/iris/v3"
FAST = {"interval": "2s", "minRequests": 20, "maxErrorPercent": 1}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(train(Path(tmp_path_factory.mktemp("iris"))))


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return shifted_rows(300, 0.0, seed=3)


class Trace:
    """Every distinct value `read()` returned, polled every 0.1 s in the background."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read = read
        self.seen: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            point = self.read()
            if not self.seen or self.seen[-1] != point:
                self.seen.append(point)
            self._stop.wait(0.1)

    def __enter__(self) -> Trace:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def canary_point(cluster: Cluster, ns: str, name: str) -> tuple[Any, ...]:
    canary = cluster.status(MD, ns, name).get("canary") or {}
    return (canary.get("state"), canary.get("step"), canary.get("trafficPercent"))


def canary_in(cluster: Cluster, ns: str, name: str, state: str) -> dict[str, Any] | None:
    status = cluster.status(MD, ns, name)
    canary = status.get("canary") or {}
    return status if canary.get("state") == state else None


def replicas(cluster: Cluster, ns: str, name: str) -> int | None:
    dep = or_none(cluster.apps.read_namespaced_deployment, name, ns)
    return None if dep is None else int(dep.spec.replicas)


def reasons(cluster: Cluster, ns: str, name: str, *wanted: str) -> set[str]:
    """The canary Events on the ModelDeployment (not its Deployment of the same name),
    once every reason in `wanted` is among them (the Event follows the status write)."""
    return {
        reason
        for reason in cluster.await_events(ns, name, set(wanted), kind=MD)
        if reason.startswith("Canary")
    }


@pytest.fixture
def fleet(
    cluster: Cluster, namespace: str, model: LoadedModel, rows: np.ndarray
) -> Iterator[Fleet]:
    with Fleet(cluster, namespace, "iris", free_port(), model, rows) as bed:
        yield bed


def stable_ready(cluster: Cluster, fleet: Fleet, spec: dict[str, Any]) -> None:
    ns = fleet.namespace
    cluster.create(
        MD,
        ns,
        "iris",
        {"model": {"uri": V1}, "replicas": 4, "runtime": {"port": fleet.port}, **spec},
    )
    wait_for(
        lambda: (
            cluster.status(MD, ns, "iris").get("phase") == "Ready"
            and len(fleet.ready_addresses()) == 4
        ),
        40,
        "stable Ready, 4 pods served",
    )


def test_good_canary_goes_step_by_step_and_is_promoted(cluster: Cluster, fleet: Fleet) -> None:
    ns = fleet.namespace
    stable_ready(cluster, fleet, {})
    fleet.sending.set()
    with Trace(lambda: canary_point(cluster, ns, "iris")) as trace:
        cluster.patch_spec(
            MD,
            ns,
            "iris",
            {"canary": {"model": {"uri": V2}, "steps": [25, 50, 100], "analysis": FAST}},
        )
        try:
            status = wait_for(lambda: canary_in(cluster, ns, "iris", "Promoted"), 90, "promoted")
        except AssertionError as err:
            raise AssertionError(
                f"{err}; went through {trace.seen}; now {cluster.status(MD, ns, 'iris')}"
            ) from None
    # Each step was measured before the next: 25%, then 50%, then the promotion.
    states = [p for p in trace.seen if p[0] in ("Analyzing", "Promoting", "Promoted")]
    assert states[0] == ("Analyzing", 1, 25), trace.seen
    assert ("Analyzing", 2, 50) in states, trace.seen
    assert states.index(("Analyzing", 1, 25)) < states.index(("Analyzing", 2, 50)), trace.seen
    assert any(p[0] == "Promoting" for p in states), trace.seen
    assert all(p[1] == 3 for p in states[states.index(("Analyzing", 2, 50)) + 1 :]), trace.seen
    # The stable serves the canary's model now; the canary is at zero; spec is untouched.
    assert status["promotion"]["uri"] == V2 and status["promotion"]["replaces"] == V1
    assert status["activeModelUri"] == V2
    stable = cluster.apps.read_namespaced_deployment("iris", ns)
    assert stable.metadata.annotations["kubeloop.io/model-uri"] == V2
    assert stable.spec.replicas == 4
    wait_for(lambda: replicas(cluster, ns, "iris-canary") == 0, 20, "canary at zero")
    assert cluster.get(MD, ns, "iris")["spec"]["model"] == {"uri": V1, "format": "sklearn"}
    judged = status["canary"]["analysis"]
    assert judged["decision"] == "Pass" and judged["canary"]["requests"] >= 20
    assert judged["canary"]["errorPercent"] == 0
    reasons(cluster, ns, "iris", "CanaryStarted", "CanaryStepPassed", "CanaryPromoting",
            "CanaryPromoted")
    wait_for(lambda: cluster.status(MD, ns, "iris")["phase"] == "Ready", 20, "Ready")

    # A new canary model starts a new analysis, from step 1, against the promoted stable.
    fleet.behave(V3, Behaviour(fail_above=6.0))
    cluster.patch_spec(MD, ns, "iris", {"canary": {"model": {"uri": V3}}})
    status = wait_for(lambda: canary_in(cluster, ns, "iris", "RolledBack"), 60, "rolled back")
    message = status["canary"]["message"]
    assert re.search(r"error rate [0-9.]+% > 1% over [0-9]+ requests", message), message
    assert status["activeModelUri"] == V2, "the promoted stable keeps serving"
    wait_for(lambda: replicas(cluster, ns, "iris-canary") == 0, 20, "canary at zero")
    assert cluster.apps.read_namespaced_deployment("iris", ns).spec.replicas == 4


def test_failing_canary_is_rolled_back_with_its_numbers(cluster: Cluster, fleet: Fleet) -> None:
    ns = fleet.namespace
    fleet.behave(V2, Behaviour(fail_above=6.0))
    stable_ready(cluster, fleet, {})
    fleet.sending.set()
    cluster.patch_spec(
        MD, ns, "iris", {"canary": {"model": {"uri": V2}, "steps": [25, 50, 100], "analysis": FAST}}
    )
    status = wait_for(lambda: canary_in(cluster, ns, "iris", "RolledBack"), 60, "rolled back")
    message = status["canary"]["message"]
    assert re.search(
        r"failed step 1 of 3 \(25% of traffic\): error rate [0-9.]+% > 1% over "
        r"[0-9]+ requests",
        message,
    ), message
    assert status["message"].startswith("CanaryRolledBack: "), status["message"]
    judged = status["canary"]["analysis"]
    assert judged["decision"] == "Fail" and judged["canary"]["errorPercent"] > 1
    assert judged["stable"]["errorPercent"] == 0
    wait_for(lambda: replicas(cluster, ns, "iris-canary") == 0, 20, "canary at zero")
    assert cluster.apps.read_namespaced_deployment("iris", ns).spec.replicas == 4
    assert status["activeModelUri"] == V1 and "promotion" not in status
    cond = cluster.condition(MD, ns, "iris", "CanaryAvailable")
    assert cond and cond["reason"] == "CanaryRolledBack", cond
    reasons(cluster, ns, "iris", "CanaryRolledBack")
    # It stays rolled back: the same model is not tried again by itself.
    stays(lambda: canary_in(cluster, ns, "iris", "RolledBack"), 5, "rolled back")


def test_slow_canary_is_rolled_back_relative_to_the_stable(cluster: Cluster, fleet: Fleet) -> None:
    ns = fleet.namespace
    fleet.behave(V2, Behaviour(delay=0.15))
    stable_ready(cluster, fleet, {})
    fleet.sending.set()
    cluster.patch_spec(
        MD,
        ns,
        "iris",
        {
            "canary": {
                "model": {"uri": V2},
                "steps": [50, 100],
                "analysis": {**FAST, "minRequests": 10, "maxLatencyP99Ratio": 3},
            }
        },
    )
    status = wait_for(lambda: canary_in(cluster, ns, "iris", "RolledBack"), 60, "rolled back")
    message = status["canary"]["message"]
    assert re.search(r"p99 latency [0-9.]+ ms > 3 x the stable's [0-9.]+ ms", message), message
    judged = status["canary"]["analysis"]
    assert judged["canary"]["latencyP99Ms"] >= 100 > judged["stable"]["latencyP99Ms"]


def test_too_few_requests_hold_then_pause_resume_and_abort(cluster: Cluster, fleet: Fleet) -> None:
    ns = fleet.namespace
    stable_ready(cluster, fleet, {})
    cluster.patch_spec(
        MD, ns, "iris", {"canary": {"model": {"uri": V2}, "steps": [25, 50, 100], "analysis": FAST}}
    )
    # No traffic: the step is held, never passed.
    status = wait_for(lambda: canary_in(cluster, ns, "iris", "Holding"), 40, "holding")
    assert re.search(r"holding step 1 of 3 .*: 0 of 20 requests", status["canary"]["message"]), (
        status["canary"]["message"]
    )
    assert status["phase"] == "Progressing"
    stays(lambda: cluster.status(MD, ns, "iris")["canary"]["step"] == 1, 5, "held at step 1")
    # Paused: nothing moves even with traffic.
    cluster.patch_spec(MD, ns, "iris", {"canary": {"paused": True}})
    wait_for(lambda: canary_in(cluster, ns, "iris", "Paused"), 20, "paused")
    fleet.sending.set()
    stays(
        lambda: (
            canary_in(cluster, ns, "iris", "Paused")
            and cluster.status(MD, ns, "iris")["canary"]["step"] == 1
        ),
        6,
        "paused at step 1",
    )
    # Resumed: a fresh window, and step 1 passes on the traffic.
    cluster.patch_spec(MD, ns, "iris", {"canary": {"paused": False}})
    wait_for(
        lambda: (cluster.status(MD, ns, "iris").get("canary") or {}).get("step") == 2, 40, "step 2"
    )
    reasons(cluster, ns, "iris", "CanaryResumed")
    # Aborted: the canary goes to zero, the stable serves everything, nothing is promoted.
    cluster.patch_spec(MD, ns, "iris", {"canary": {"abort": True}})
    status = wait_for(lambda: canary_in(cluster, ns, "iris", "Aborted"), 20, "aborted")
    assert status["activeModelUri"] == V1 and "promotion" not in status
    assert status["message"].startswith("CanaryAborted: ")
    wait_for(lambda: replicas(cluster, ns, "iris-canary") == 0, 20, "canary at zero")
    assert cluster.apps.read_namespaced_deployment("iris", ns).spec.replicas == 4
    reasons(cluster, ns, "iris", "CanaryAborted")
    stays(lambda: canary_in(cluster, ns, "iris", "Aborted"), 4, "aborted")
    # Abort cleared: the same model starts again from the first step.
    cluster.patch_spec(MD, ns, "iris", {"canary": {"abort": False}})
    wait_for(
        lambda: (
            (c := cluster.status(MD, ns, "iris").get("canary") or {})
            and c.get("step") == 1
            and c.get("state") in ("Progressing", "Analyzing")
        ),
        20,
        "step 1 again",
    )


def test_route_carries_the_exact_share(
    cluster: Cluster,
    namespace: str,
    gateway_crds: Path,  # noqa: F811
) -> None:
    cluster.create(
        MD,
        namespace,
        "web",
        {
            "model": {"uri": V1},
            "replicas": 3,
            "canary": {"model": {"uri": V2}, "trafficPercent": 30},
            "route": {"gateway": {"name": "public", "namespace": "infra"}, "path": "/iris"},
        },
    )

    def weights() -> dict[str, int] | None:
        try:
            route = cluster.custom.get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", "web"
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        refs = route["spec"]["rules"][0]["backendRefs"]
        return {ref["name"]: ref["weight"] for ref in refs}

    # The Service's split by replicas is 33%; the route's weights are the 30% asked.
    # No weight for the canary until its pods are ready; then the exact share.
    assert wait_for(weights, 30, "HTTPRoute") in (
        {"web-stable": 100},
        {"web-stable": 70, "web-canary": 30},
    )
    wait_for(lambda: weights() == {"web-stable": 70, "web-canary": 30}, 30, "weights 70/30")
    for track in ("stable", "canary"):
        svc = cluster.core.read_namespaced_service(f"web-{track}", namespace)
        assert svc.spec.selector["kubeloop.io/track"] == track
    cond = wait_for(lambda: cluster.condition(MD, namespace, "web", "Routed"), 20, "Routed")
    assert cond["status"] == "True" and "web-canary 30" in cond["message"], cond
    cluster.patch_spec(MD, namespace, "web", {"canary": {"trafficPercent": 60}})
    wait_for(lambda: weights() == {"web-stable": 40, "web-canary": 60}, 20, "weights 40/60")
    # The route goes when spec.route goes.
    cluster.patch_spec(MD, namespace, "web", {"route": None})
    wait_for(lambda: weights() is None, 20, "HTTPRoute deleted")
    wait_for(
        lambda: cluster.condition(MD, namespace, "web", "Routed") is None,
        20,
        "Routed condition gone",
    )


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [(Behaviour(), "Promoted"), (Behaviour(fail_above=6.0), "RolledBack")],
    ids=["good", "failing"],
)
def test_drift_monitor_promotion_goes_through_the_canary(
    cluster: Cluster, fleet: Fleet, tmp_path: Path, behaviour: Behaviour, outcome: str
) -> None:
    """A retrained model becomes the canary; the monitor records Promoted only after the
    last step, or RolledBack when the canary's analysis fails."""
    ns = fleet.namespace
    v1 = train(tmp_path / "v1")
    retrained = train(tmp_path / "watch-retrain-1", shift=2.0)
    new_uri = f"file://{retrained}"
    fleet.behave(new_uri, behaviour)
    source = ModelServer(v1, free_port())  # the monitor's drift source, as in test_drift_loop
    source.start()
    try:
        cluster.create(
            MD,
            ns,
            "iris",
            {
                "model": {"uri": f"file://{v1}"},
                "replicas": 4,
                "runtime": {"port": fleet.port},
                "canary": {"model": {"uri": f"file://{v1}"}, "steps": [50, 100], "analysis": FAST},
            },
        )
        wait_for(
            lambda: canary_in(cluster, ns, "iris", "Idle") and len(fleet.ready_addresses()) == 4,
            40,
            "stable Ready, canary idle",
        )
        fleet.sending.set()
        cluster.create(
            DM,
            ns,
            "watch",
            {
                "modelDeployment": "iris",
                "source": {"url": f"{source.url}/metrics"},
                "reference": {"url": f"{source.url}/v2/models/iris/profile"},
                "method": "psi",
                "interval": "1s",
                "minSamples": 200,
                "onDrift": {
                    "promote": True,
                    "retrain": {
                        "cooldown": "1h",
                        "template": {
                            "image": "registry.local/train:1",
                            "output": {"uri": f"file://{tmp_path}/{{trainingJob}}"},
                            "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "1s"}},
                        },
                    },
                },
            },
        )
        wait_for(lambda: cluster.status(DM, ns, "watch").get("window"), 20, "baseline")
        with Trace(
            lambda: (
                (cluster.status(DM, ns, "watch").get("lastRetrain") or {}).get("result"),
                canary_point(cluster, ns, "iris"),
            )
        ) as trace:
            source.send(shifted_rows(300, shift=2.0))
            try:
                record = wait_for(
                    lambda: (
                        (r := cluster.status(DM, ns, "watch").get("lastRetrain"))
                        and r["result"] not in ("Running", "RollingOut")
                        and r
                    ),
                    60,
                    "the rollout's end",
                )
            except AssertionError as err:
                raise AssertionError(f"{err}; went through {trace.seen}") from None
        # RollingOut while the canary went through its steps, and only then the end.
        results = [point[0] for point in trace.seen]
        assert "RollingOut" in results, trace.seen
        assert ("RollingOut", ("Analyzing", 1, 50)) in trace.seen, trace.seen
        assert record["result"] == outcome, (record, trace.seen)
        # The monitor (read first) never told the end before the deployment (read after).
        canary_state = outcome
        assert all(p[1][0] == canary_state for p in trace.seen if p[0] == outcome), trace.seen
        assert record["modelUri"] == new_uri
        assert cluster.get(MD, ns, "iris")["spec"]["canary"]["model"]["uri"] == new_uri
        assert cluster.get(MD, ns, "iris")["spec"]["model"]["uri"] == f"file://{v1}"
        md = cluster.status(MD, ns, "iris")
        assert md["canary"]["state"] == canary_state, md["canary"]
        if outcome == "Promoted":
            assert md["activeModelUri"] == new_uri
            assert md["history"][0]["changedBy"] == "DriftMonitor/watch"
        else:
            assert md["activeModelUri"] == f"file://{v1}"
        assert cluster.status(DM, ns, "watch")["retrains"][0]["result"] == outcome
        # The Event follows the status write that says the same: wait for it, not race it.
        cluster.await_events(ns, "watch", {outcome}, 15)
    finally:
        source.stop()


def test_restarts_over_settled_canaries_write_nothing(
    cluster: Cluster, fleet: Fleet, operator: InProcessOperator
) -> None:
    """Promoted, paused and aborted canaries, settled: restarting the operator again and
    again writes no resource and no Event (its windows are in memory; none is needed to
    know where a settled canary stands)."""
    ns = fleet.namespace
    stable_ready(cluster, fleet, {})
    fleet.sending.set()
    cluster.patch_spec(
        MD, ns, "iris", {"canary": {"model": {"uri": V2}, "steps": [50, 100], "analysis": FAST}}
    )
    wait_for(lambda: canary_in(cluster, ns, "iris", "Promoted"), 60, "promoted")
    fleet.sending.clear()
    for name, extra in (("paused", {"paused": True}), ("aborted", {"abort": True})):
        cluster.create(
            MD,
            ns,
            name,
            {
                "model": {"uri": V1},
                "replicas": 2,
                "canary": {"model": {"uri": V2}, "steps": [50, 100], **extra},
            },
        )
    wait_for(
        lambda: (
            canary_in(cluster, ns, "paused", "Paused")
            and canary_in(cluster, ns, "aborted", "Aborted")
            and cluster.status(MD, ns, "iris")["phase"] == "Ready"
        ),
        40,
        "settled states",
    )

    def versions() -> dict[str, str]:
        return {
            n: cluster.get(MD, ns, n)["metadata"]["resourceVersion"]
            for n in ("iris", "paused", "aborted")
        }

    def settled() -> dict[str, str] | None:
        before = versions()
        try:
            stays(lambda: versions() == before, 5, "settled")
        except AssertionError:
            return None
        return before

    snapshot = wait_for(settled, 60, "the canaries settled")
    seen = len(cluster.core.list_namespaced_event(ns).items)
    for pause in (0.0, 0.4, 0.9, 1.5):
        operator.stop()
        operator.start()
        time.sleep(pause)  # stopped at a different moment of its start each time
    stays(lambda: versions() == snapshot, 10, "no ModelDeployment written after the restarts")
    assert len(cluster.core.list_namespaced_event(ns).items) == seen
