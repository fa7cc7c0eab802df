"""The serving pods a DriftMonitor reads: the ready pods of the watched model for its
inputs (the others for their quality counters), and every pod's labelled rows for a
retrain's evaluation on live labels (docs/quality.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kubeloop.api.driftmonitor import DriftMonitorSpec
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.controllers.common import Ctx
from kubeloop.controllers.k8sread import pod_ready
from kubeloop.names import MODEL_URI_ANNOTATION, SERVER_PORT

MD_POD = "ModelDeployment/Pod"
MAX_PODS_SCRAPED = 20


@dataclass(frozen=True)
class Endpoints:
    """The `/metrics` URLs of a check: ``current``, the ready pods of the watched model
    (or a URL that cannot tell); ``others``, pods that serve another model."""

    current: list[str]
    others: list[str] = field(default_factory=list)


def endpoints(
    ctx: Ctx, spec: DriftMonitorSpec, namespace: str, target: dict[str, Any]
) -> Endpoints:
    if spec.source.url:
        return Endpoints([spec.source.url])
    md_spec = ModelDeploymentSpec.model_validate(target.get("spec") or {})
    port = md_spec.runtime.port if md_spec.runtime else SERVER_PORT
    active = (target.get("status") or {}).get("activeModelUri")
    current: list[str] = []
    others: list[str] = []
    for pod in ctx.store.owned(MD_POD, namespace, target["metadata"]["name"]):
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or pod["metadata"].get("deletionTimestamp"):
            continue
        serves = (pod["metadata"].get("annotations") or {}).get(MODEL_URI_ANNOTATION)
        # A pod that does not say which model it serves is counted as the current's.
        if active and serves and serves != active:
            others.append(f"http://{ip}:{port}/metrics")
        elif pod_ready(pod):
            # One still starting serves nothing yet, and may not export its inputs.
            current.append(f"http://{ip}:{port}/metrics")
    current = current[:MAX_PODS_SCRAPED]
    others = others[: MAX_PODS_SCRAPED - len(current)]
    if current or others:
        return Endpoints(current, others)
    # No pod known (yet): the target's own Service in the same namespace.
    return Endpoints([f"http://{target['metadata']['name']}.{namespace}.svc:{port}/metrics"])


def live_rows_urls(endpoints: Endpoints, model: str) -> list[str]:
    """Where the evaluation Job reads the labelled rows: every pod the check reads,
    whichever model it serves (a label is about the world, not a model), at its rows
    route (docs/quality.md)."""
    out = []
    for url in [*endpoints.current, *endpoints.others]:
        parts = urlsplit(url)
        route = f"/v2/models/{model}/feedback/rows"
        out.append(urlunsplit((parts.scheme, parts.netloc, route, "", "")))
    return out
