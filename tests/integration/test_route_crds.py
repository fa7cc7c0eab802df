"""The HTTPRoute and per-track Services of a ModelDeployment's `spec.route` against the
real Gateway API schema: the standard channel CRDs (hack/gateway-api-crds.sh, pinned by
GATEWAY_API_VERSION in hack/versions.env) are applied to the test cluster, and what
operator/kubeloop/render/route.py renders is applied with a server-side dry run (the
owner reference names no real ModelDeployment, and a dry run creates nothing)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.names import TRACK_LABEL
from kubeloop.render.modeldeployment import CANARY, STABLE, labels
from kubeloop.render.route import render_route, render_track_service
from tests.kubetest import GROUP, ROOT, VERSION, Cluster, wait_for

pytestmark = pytest.mark.integration

GATEWAY_GROUP = "gateway.networking.k8s.io"
CRDS = ("gatewayclasses", "gateways", "httproutes")
NAME = "iris"
SPEC = ModelDeploymentSpec.model_validate(
    {
        "model": {"uri": "s3://models/iris/v1"},
        "runtime": {"port": 9000},
        "canary": {"model": {"uri": "s3://models/iris/v2"}, "trafficPercent": 25},
        "route": {
            "gateway": {"name": "web", "namespace": "infra", "sectionName": "http"},
            "hostnames": ["iris.example.com"],
            "path": "/models/iris",
        },
    }
)


def crd_dir() -> Path:
    """The CRD directory hack/gateway-api-crds.sh prints on its last line."""
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "gateway-api-crds.sh")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"hack/gateway-api-crds.sh failed:\n{result.stderr}"
    path = Path(result.stdout.strip().splitlines()[-1])
    for plural in CRDS:
        assert (path / f"{GATEWAY_GROUP}_{plural}.yaml").is_file(), f"{plural} CRD not in {path}"
    return path


def established(cluster: Cluster, plural: str) -> bool:
    result = cluster.kubectl("get", "crd", f"{plural}.{GATEWAY_GROUP}", "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def gateway_crds(cluster: Cluster) -> Path:
    """The standard channel CRDs, applied and served. They stay installed afterwards, as
    the kubeloop CRDs do: a later run finds them in place."""
    path = crd_dir()
    # Server-side: the HTTPRoute CRD is larger than the last-applied annotation allows.
    # No --force-conflicts: Gateway API CRDs that another manager installed are not ours
    # to overwrite, and a conflict says so.
    cluster.kubectl("apply", "--server-side", "--field-manager=kubeloop-tests", "-f", str(path))
    for plural in CRDS:
        wait_for(partial(established, cluster, plural), 60, f"crd/{plural} Established")

    # Discovery may lag behind Established by a moment.
    def discovered() -> bool:
        got = cluster.kubectl("get", f"httproutes.{GATEWAY_GROUP}", "-A", check=False)
        return got.returncode == 0

    wait_for(discovered, 30, "httproutes in discovery")
    return path


@pytest.fixture
def fresh_namespace(cluster: Cluster, gateway_crds: Path) -> Iterator[str]:
    """A namespace of its own; no operator is needed for dry runs."""
    name = cluster.new_namespace()
    yield name
    cluster.delete_namespace(name)


def owner() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "name": NAME,
        "uid": str(uuid.uuid4()),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def dry_run(cluster: Cluster, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj), check=False
    )


def accepted(cluster: Cluster, obj: dict[str, Any]) -> dict[str, Any]:
    result = dry_run(cluster, obj)
    kind, name = obj["kind"], obj["metadata"]["name"]
    assert result.returncode == 0, f"{kind} {name} was refused:\n{result.stderr}"
    applied: dict[str, Any] = json.loads(result.stdout)
    assert (applied["kind"], applied["metadata"]["name"]) == (kind, name)
    return applied


def test_route_and_track_services_are_accepted(cluster: Cluster, fresh_namespace: str) -> None:
    ns, ref = fresh_namespace, owner()
    for track in (STABLE, CANARY):
        svc = accepted(cluster, render_track_service(SPEC, NAME, ns, track, ref))
        assert svc["metadata"]["namespace"] == ns
        assert svc["spec"]["selector"] == {**labels(NAME), TRACK_LABEL: track}
        assert [p["port"] for p in svc["spec"]["ports"]] == [9000, 8081]  # http, grpc

    route = accepted(cluster, render_route(SPEC, NAME, ns, ref, 25))
    assert route["apiVersion"] == f"{GATEWAY_GROUP}/v1"
    assert route["metadata"]["ownerReferences"][0]["uid"] == ref["uid"]
    assert route["spec"]["parentRefs"] == [
        {
            "group": GATEWAY_GROUP,
            "kind": "Gateway",
            "name": "web",
            "namespace": "infra",
            "sectionName": "http",
        }
    ]
    assert route["spec"]["hostnames"] == ["iris.example.com"]
    [rule] = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/models/iris"}}]
    assert [(b["name"], b["weight"], b["port"]) for b in rule["backendRefs"]] == [
        (f"{NAME}-stable", 75, 9000),
        (f"{NAME}-canary", 25, 9000),
    ]


@pytest.mark.parametrize(
    ("percent", "weights"),
    [(None, [(f"{NAME}-stable", 100)]), (100, [(f"{NAME}-stable", 0), (f"{NAME}-canary", 100)])],
    ids=["no-canary", "all-canary"],
)
def test_edge_weights_are_accepted(
    cluster: Cluster, fresh_namespace: str, percent: int | None, weights: list[tuple[str, int]]
) -> None:
    route = accepted(cluster, render_route(SPEC, NAME, fresh_namespace, owner(), percent))
    [rule] = route["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == weights


def test_negative_weight_is_rejected_by_the_schema(cluster: Cluster, fresh_namespace: str) -> None:
    """The schema is really enforced: the same route with one weight of -1 is refused."""
    route = render_route(SPEC, NAME, fresh_namespace, owner(), 25)
    accepted(cluster, route)
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    result = dry_run(cluster, route)
    assert result.returncode != 0, f"a weight of -1 was accepted:\n{result.stdout}"
    assert "spec.rules[0].backendRefs[0].weight" in result.stderr, result.stderr
    assert "greater than or equal to 0" in result.stderr, result.stderr
