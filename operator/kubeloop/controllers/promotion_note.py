"""The promotion note a DriftMonitor leaves on a ModelDeployment (its
`kubeloop.io/promotion` annotation), and the model the note makes the deployment serve.

Git says the policy, the cluster says which model now. With `onDrift.promoteWith:
Annotation` the monitor never writes the deployment's spec: the note names the spec
field it stands in for (`model`, or `canary.model` when the deployment has a canary)
and that field's value as the monitor saw it (`inPlaceOf`). The deployment serves the
note's model in place of the field for as long as the field still says what it said
then. A GitOps controller re-applying the same spec leaves both the field and the
note (the note is the promoter's, under its own field manager, and in no manifest), so
the promotion stands; a new value in the field (a user's commit) ends it, and the
user's model serves. A note without `inPlaceOf` (`promoteWith: Spec`, which patches
the field itself) only tells the history who made the change.

Pure: from the object as read to the note, and from the typed spec to the spec served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.names import PROMOTION_ANNOTATION

MODEL, CANARY_MODEL = "model", "canary.model"


@dataclass(frozen=True)
class Standing:
    """A note whose promotion stands: `uri` serves in place of the spec's `field`."""

    field: str
    uri: str
    by: str
    training_job: str | None
    in_place_of: dict[str, Any]

    def describe(self) -> str:
        run = f" (retrain {self.training_job})" if self.training_job else ""
        place = f"spec.{self.field} {_words(self.in_place_of)}"
        return f"promoted by {self.by}{run} in place of {place}"


def field_of(spec: dict[str, Any]) -> str:
    """Which field a promotion of this deployment stands in for: the canary's model when
    the deployment has canary settings (canary first), else the model."""
    return CANARY_MODEL if spec.get("canary") else MODEL


def source(spec: dict[str, Any], field: str) -> dict[str, Any] | None:
    """The field's value in a raw spec (None when absent)."""
    holder = spec.get("canary") if field == CANARY_MODEL else spec
    value = (holder or {}).get("model")
    return value if isinstance(value, dict) else None


def note(
    target: dict[str, Any], uri: str, who: dict[str, Any], in_place: bool
) -> dict[str, Any]:
    """The note's content: `who` (uri, by, trainingJob, evaluation) and, for a promotion
    kept out of the spec, what it stands in for."""
    out = dict(who, uri=uri)
    if in_place:
        spec = target.get("spec") or {}
        field = field_of(spec)
        out.update(field=field, inPlaceOf=source(spec, field) or {})
    return out


def read(annotations: dict[str, str] | None) -> dict[str, Any] | None:
    """The note, when there is a well-formed one."""
    raw = (annotations or {}).get(PROMOTION_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def standing(body: dict[str, Any]) -> Standing | None:
    """The promotion kept out of the spec that still stands: the field it stands in for
    still says what it said when the monitor promoted."""
    data = read(body.get("metadata", {}).get("annotations"))
    if data is None or not isinstance(data.get("inPlaceOf"), dict):
        return None
    field, uri, by = data.get("field"), data.get("uri"), data.get("by")
    if field not in (MODEL, CANARY_MODEL) or not isinstance(uri, str) or not uri:
        return None
    current = source(body.get("spec") or {}, field)
    if current is None or _canonical(current) != _canonical(data["inPlaceOf"]):
        return None
    run = data.get("trainingJob")
    return Standing(
        field=field,
        uri=uri[:2048],
        by=str(by)[:128] if isinstance(by, str) else "unknown",
        training_job=run[:253] if isinstance(run, str) else None,
        in_place_of=current,
    )


def served_spec(spec: ModelDeploymentSpec, promoted: Standing | None) -> ModelDeploymentSpec:
    """The spec the deployment serves: the typed spec with a standing promotion's model
    in place of its field (the field's format kept)."""
    if promoted is None:
        return spec
    if promoted.field == CANARY_MODEL:
        if spec.canary is None:
            return spec
        model = spec.canary.model.model_copy(update=_only_uri(promoted.uri))
        canary = spec.canary.model_copy(update={"model": model})
        return spec.model_copy(update={"canary": canary})
    model = spec.model.model_copy(update=_only_uri(promoted.uri))
    return spec.model_copy(update={"model": model})


def served_raw(spec: dict[str, Any], promoted: Standing | None) -> dict[str, Any]:
    """The same on a raw spec (what the monitor reads of its target)."""
    if promoted is None or source(spec, promoted.field) is None:
        return spec
    model = {**(source(spec, promoted.field) or {}), "uri": promoted.uri}
    model.pop("fromTrainingJob", None)
    model.pop("fromExperiment", None)
    if promoted.field == CANARY_MODEL:
        return {**spec, "canary": {**(spec.get("canary") or {}), "model": model}}
    return {**spec, "model": model}


def _only_uri(uri: str) -> dict[str, Any]:
    """A model source's update to this URI alone (its other sources cleared)."""
    return {"uri": uri, "from_training_job": None, "from_experiment": None}


def _canonical(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _words(value: dict[str, Any]) -> str:
    if value.get("uri"):
        return str(value["uri"])
    for key in ("fromTrainingJob", "fromExperiment"):
        if isinstance(value.get(key), dict):
            return f"{key} {value[key].get('name', '?')}"
    return "?"
