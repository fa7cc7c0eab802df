"""A DriftMonitor's challenger on trial as a ModelDeployment's shadow (`onDrift.shadow`),
kept in the deployment's `kubeloop.io/shadow-trial` annotation, and the shadow the note
makes the deployment run.

The trial is the loop's own short-lived state, not the user's intent, so it is never
written into the deployment's spec, whichever `promoteWith` says: a GitOps controller
re-applying the spec from Git leaves the note (the promoter's, in no manifest), and no
`kubectl apply` of the user's manifest fights over `spec.shadow`. A shadow the user set
in `spec.shadow` wins over the note: the trial then cannot run (ShadowInUse).

Pure: from the object as read to the note, and from the typed spec to the spec served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubeloop.api.driftmonitor import ShadowGate
from kubeloop.api.modeldeployment import ModelDeploymentSpec, Shadow
from kubeloop.names import SHADOW_TRIAL_ANNOTATION


@dataclass(frozen=True)
class Trial:
    uri: str
    by: str
    training_job: str | None
    mirror_percent: int
    min_samples: int


def note(uri: str, monitor: str, training_job: str, gate: ShadowGate) -> str:
    """The annotation's value for a trial of `uri` started by `monitor`."""
    return json.dumps(
        {
            "uri": uri,
            "by": f"DriftMonitor/{monitor}",
            "trainingJob": training_job,
            "mirrorPercent": gate.mirror_percent,
            "minSamples": gate.min_labelled,
        },
        sort_keys=True,
    )


def read(body: dict[str, Any] | None) -> Trial | None:
    """The trial on this deployment, when there is a well-formed note."""
    raw = (((body or {}).get("metadata") or {}).get("annotations") or {}).get(
        SHADOW_TRIAL_ANNOTATION
    )
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("uri"), str) or not data["uri"]:
        return None
    percent, samples = data.get("mirrorPercent"), data.get("minSamples")
    run = data.get("trainingJob")
    return Trial(
        uri=data["uri"][:2048],
        by=str(data.get("by") or "unknown")[:128],
        training_job=run[:253] if isinstance(run, str) else None,
        mirror_percent=percent if isinstance(percent, int) and 1 <= percent <= 100 else 100,
        min_samples=samples if isinstance(samples, int) and samples >= 1 else 100,
    )


def served_spec(spec: ModelDeploymentSpec, body: dict[str, Any]) -> ModelDeploymentSpec:
    """The spec with the trial's challenger as its shadow, unless the spec has its own
    (or the challenger is the stable model itself)."""
    trial = read(body)
    if trial is None or spec.shadow is not None or trial.uri == spec.model.uri:
        return spec
    shadow = Shadow.model_validate(
        {
            "model": {"uri": trial.uri},
            "mirrorPercent": trial.mirror_percent,
            "minSamples": trial.min_samples,
        }
    )
    return spec.model_copy(update={"shadow": shadow})


def end_patch() -> dict[str, Any]:
    """The merge patch that ends a trial: the note removed (and with it the shadow)."""
    return {"metadata": {"annotations": {SHADOW_TRIAL_ANNOTATION: None}}}
