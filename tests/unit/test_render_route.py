"""The HTTPRoute and per-track Services rendered for a ModelDeployment's `spec.route`."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.names import MODEL_DEPLOYMENT_LABEL, TRACK_LABEL
from kubeloop.render.modeldeployment import (
    CANARY,
    STABLE,
    labels,
    pod_template,
    render_service,
)
from kubeloop.render.route import (
    ROUTE_API_VERSION,
    render_route,
    render_track_service,
    track_service_name,
)

NS = "ml"
OWNER = {
    "apiVersion": "kubeloop.io/v1alpha1",
    "kind": "ModelDeployment",
    "name": "iris",
    "uid": "0b6f4c1e-0000-4000-8000-000000000001",
    "controller": True,
    "blockOwnerDeletion": True,
}


def make_spec(route: dict[str, Any] | None = None, **extra: Any) -> ModelDeploymentSpec:
    body: dict[str, Any] = {
        "model": {"uri": "s3://m/v1"},
        "route": route if route is not None else {"gateway": {"name": "web"}},
        **extra,
    }
    return ModelDeploymentSpec.model_validate(body)


def backends(route: dict[str, Any]) -> list[tuple[str, int]]:
    [rule] = route["spec"]["rules"]
    return [(ref["name"], ref["weight"]) for ref in rule["backendRefs"]]


def test_track_service_names() -> None:
    assert track_service_name("iris", STABLE) == "iris-stable"
    assert track_service_name("iris", CANARY) == "iris-canary"


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        (None, [("iris-stable", 100)]),
        (0, [("iris-stable", 100)]),
        (10, [("iris-stable", 90), ("iris-canary", 10)]),
        (25, [("iris-stable", 75), ("iris-canary", 25)]),
        (100, [("iris-stable", 0), ("iris-canary", 100)]),
    ],
)
def test_weights_carry_the_canary_share(
    percent: int | None, expected: list[tuple[str, int]]
) -> None:
    route = render_route(make_spec(), "iris", NS, OWNER, percent)
    assert backends(route) == expected
    assert sum(weight for _, weight in backends(route)) == 100


@pytest.mark.parametrize("percent", [-1, 101])
def test_share_outside_0_to_100_is_refused(percent: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        render_route(make_spec(), "iris", NS, OWNER, percent)


def test_no_route_is_refused() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://m/v1"}})
    with pytest.raises(ValueError, match=r"no spec\.route"):
        render_route(spec, "iris", NS, OWNER, None)


def test_route_object() -> None:
    route = render_route(make_spec(), "iris", NS, OWNER, 10)
    assert route["apiVersion"] == ROUTE_API_VERSION == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "HTTPRoute"
    assert route["metadata"] == {
        "name": "iris",
        "namespace": NS,
        "labels": labels("iris"),
        "ownerReferences": [OWNER],
    }
    assert route["metadata"]["labels"][MODEL_DEPLOYMENT_LABEL] == "iris"


def test_parent_ref_without_optional_fields() -> None:
    route = render_route(make_spec({"gateway": {"name": "web"}}), "iris", NS, OWNER, None)
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}
    ]


def test_parent_ref_with_namespace_and_section() -> None:
    spec = make_spec({"gateway": {"name": "web", "namespace": "infra", "sectionName": "https"}})
    [parent] = render_route(spec, "iris", NS, OWNER, None)["spec"]["parentRefs"]
    assert parent == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "web",
        "namespace": "infra",
        "sectionName": "https",
    }


def test_parent_ref_with_section_only() -> None:
    spec = make_spec({"gateway": {"name": "web", "sectionName": "http"}})
    [parent] = render_route(spec, "iris", NS, OWNER, None)["spec"]["parentRefs"]
    assert parent["sectionName"] == "http"
    assert "namespace" not in parent


def test_hostnames_only_when_given() -> None:
    assert "hostnames" not in render_route(make_spec(), "iris", NS, OWNER, None)["spec"]
    spec = make_spec({"gateway": {"name": "web"}, "hostnames": ["iris.example.com", "ml.local"]})
    route = render_route(spec, "iris", NS, OWNER, None)
    assert route["spec"]["hostnames"] == ["iris.example.com", "ml.local"]


def test_path_prefix_default_and_given() -> None:
    [rule] = render_route(make_spec(), "iris", NS, OWNER, None)["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    spec = make_spec({"gateway": {"name": "web"}, "path": "/models/iris"})
    [rule] = render_route(spec, "iris", NS, OWNER, None)["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/models/iris"}}]


@pytest.mark.parametrize(("runtime", "port"), [(None, 8080), ({"port": 9000}, 9000)])
def test_backends_use_the_server_port(runtime: dict[str, Any] | None, port: int) -> None:
    spec = make_spec(**({"runtime": runtime} if runtime else {}))
    [rule] = render_route(spec, "iris", NS, OWNER, 30)["spec"]["rules"]
    for ref in rule["backendRefs"]:
        # A Service backendRef without a port is refused by the HTTPRoute schema.
        assert ref["port"] == port
        assert (ref["group"], ref["kind"]) == ("", "Service")
    for track in (STABLE, CANARY):
        svc = render_track_service(spec, "iris", NS, track, OWNER)
        assert svc["spec"]["ports"][0] == {"name": "http", "port": port, "targetPort": "http"}
        assert svc["spec"]["ports"][1] == {"name": "grpc", "port": 8081, "targetPort": "grpc"}


@pytest.mark.parametrize("track", [STABLE, CANARY])
def test_track_service_selects_only_its_track(track: str) -> None:
    spec = make_spec()
    svc = render_track_service(spec, "iris", NS, track, OWNER)
    assert svc["apiVersion"] == "v1" and svc["kind"] == "Service"
    assert svc["metadata"]["name"] == f"iris-{track}"
    assert svc["metadata"]["namespace"] == NS
    assert svc["metadata"]["ownerReferences"] == [OWNER]
    assert svc["spec"]["type"] == "ClusterIP"
    selector = svc["spec"]["selector"]
    assert selector == {**labels("iris"), TRACK_LABEL: track}
    # It matches this track's pods and not the other track's.
    other = CANARY if track == STABLE else STABLE
    mine = pod_template(spec, "iris", track, "s3://m/v1", "img")["metadata"]["labels"]
    theirs = pod_template(spec, "iris", other, "s3://m/v1", "img")["metadata"]["labels"]
    assert selector.items() <= mine.items()
    assert not selector.items() <= theirs.items()


def test_track_service_port_layout_matches_the_main_service() -> None:
    spec = make_spec(runtime={"port": 9000})
    main = render_service(spec, "iris", NS, OWNER)
    for track in (STABLE, CANARY):
        svc = render_track_service(spec, "iris", NS, track, OWNER)
        assert svc["spec"]["ports"] == main["spec"]["ports"]
        assert svc["spec"]["type"] == main["spec"]["type"]
        # The main Service keeps both tracks; the track Service narrows it.
        assert svc["spec"]["selector"] != main["spec"]["selector"]
