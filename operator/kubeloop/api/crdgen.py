"""CustomResourceDefinitions generated from the pydantic models.

Why our own converter rather than the `kube-custom-resource` library: that library asks
models to derive from its own base class and use its own field types, pulls in click,
and has no place for CEL rules (`x-kubernetes-validations`), which we need on nested
objects. Pydantic's JSON Schema already carries types, bounds, enums, patterns,
defaults and descriptions; this module only makes it structural: `$ref`s inlined,
`Optional` unions flattened to the inner type, titles dropped.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kubeloop.api.batchprediction import BatchPredictionSpec, BatchPredictionStatus
from kubeloop.api.computetemplate import ComputeTemplateSpec, ComputeTemplateStatus
from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus
from kubeloop.api.experiment import ExperimentSpec, ExperimentStatus
from kubeloop.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from kubeloop.api.trainingjob import FINISHED_SPEC_IMMUTABLE, TrainingJobSpec, TrainingJobStatus
from kubeloop.names import GROUP, INSTALLED_BY, VERSION

CATEGORY = "kubeloop"
_DROP_KEYS = {"title"}


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_name: str
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: list[dict[str, Any]] = field(default_factory=list)
    scope: str = "Namespaced"
    # Rules on the whole object (x-kubernetes-validations at the schema's root): the
    # only place a CRD rule sees both the spec and the status, and the old object.
    rules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _col(name: str, path: str, typ: str = "string", priority: int = 0, desc: str = "") -> dict:
    col: dict[str, Any] = {"name": name, "type": typ, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if desc:
        col["description"] = desc
    return col


_AGE = _col("Age", ".metadata.creationTimestamp", "date")
# The status every resource reads as until the operator's first status write (a CRD
# default, applied by the API server when the object has no status).
UNOBSERVED_STATUS: dict[str, Any] = {"observedGeneration": 0}
_READY = _col("Ready", '.status.conditions[?(@.type=="Ready")].status', desc="Ready condition")
_REASON = _col(
    "Reason",
    '.status.conditions[?(@.type=="Ready")].reason',
    desc="Why the resource is or is not Ready (docs/troubleshooting.md)",
)
_MESSAGE = _col("Message", ".status.message", priority=1, desc="What the operator last saw")

KINDS: list[Kind] = [
    Kind(
        "TrainingJob",
        "trainingjobs",
        "tj",
        TrainingJobSpec,
        TrainingJobStatus,
        "A training run: an Indexed Job of GPU workers with a rendezvous Service.",
        [
            _col("Phase", ".status.phase"),
            _REASON,
            _col("Workers", ".spec.workers", "integer"),
            _col("Active", ".status.workers.active", "integer"),
            _col("Restarts", ".status.restarts", "integer"),
            _col("Progress", ".status.progress.percent", "number", desc="Percent of steps done"),
            _col("Metric", ".status.metric", desc="The first metric the run reported"),
            _col("Model", ".status.modelUri", priority=1),
            _MESSAGE,
            _AGE,
        ],
        rules=[FINISHED_SPEC_IMMUTABLE],
    ),
    Kind(
        "ModelDeployment",
        "modeldeployments",
        "mdep",
        ModelDeploymentSpec,
        ModelDeploymentStatus,
        "A served model: Deployment, Service and HorizontalPodAutoscaler, with canaries.",
        [
            _col("Phase", ".status.phase"),
            _READY,
            _REASON,
            _col("Replicas", ".status.readyReplicas", "integer"),
            _col("Canary", ".status.canary.state"),
            _col("Step", ".status.canary.step", "integer", desc="The canary's step, from 1"),
            _col(
                "Canary %",
                ".status.canary.actualTrafficPercent",
                "integer",
                desc="The canary's share of requests now",
            ),
            _col(
                "Shadow",
                ".status.shadow.summary",
                desc="The shadow against the stable on the same requests (docs/shadow.md)",
            ),
            _col("Model", ".status.activeModelUri", priority=1),
            _col("URL", ".status.url", priority=1),
            _MESSAGE,
            _AGE,
        ],
    ),
    Kind(
        "DriftMonitor",
        "driftmonitors",
        "dm",
        DriftMonitorSpec,
        DriftMonitorStatus,
        "Watches a ModelDeployment for drift; retrains and rolls out on drift.",
        [
            _col("Phase", ".status.phase"),
            _REASON,
            _col("Target", ".spec.modelDeployment"),
            _col("Drifted", ".status.drifted", "boolean"),
            _col("Score", ".status.score", "number"),
            _col("Performance", ".status.performance.judged", "number"),
            _col("Retrains", ".status.retrainCount", "integer"),
            _col("Last Retrain", ".status.lastRetrain.result", priority=1),
            _col("Last Check", ".status.lastCheckTime", "date", priority=1),
            _MESSAGE,
            _AGE,
        ],
    ),
]

KINDS.append(
    Kind(
        "ComputeTemplate",
        "computetemplates",
        "ct",
        ComputeTemplateSpec,
        ComputeTemplateStatus,
        "A machine shape an administrator offers: CPU, memory, GPUs, placement, queue and "
        "limits that TrainingJobs and ModelDeployments pick by name (`spec.compute`).",
        [
            _col("GPU", ".spec.gpu.count", "integer"),
            _col("GPU Type", ".spec.gpu.type", priority=1),
            _col("CPU", ".spec.cpu"),
            _col("Memory", ".spec.memory"),
            _col("Fits Now", ".status.fitsNow", "integer", desc="Pods of this shape that fit now"),
            _col("Fits Max", ".status.fitsMax", "integer", priority=1),
            _col("In Use", ".status.inUse", "integer"),
            _col("Default", ".spec.default", "boolean", priority=1),
            _col("Description", ".spec.description", priority=1),
            _AGE,
        ],
        scope="Cluster",
    )
)

KINDS.append(
    Kind(
        "Experiment",
        "experiments",
        "exp",
        ExperimentSpec,
        ExperimentStatus,
        "A hyperparameter search: trials are TrainingJobs whose hyperparameters Optuna picks, "
        "stopped early from what they report; `kubectl get exp` is the leaderboard.",
        [
            _col("Phase", ".status.phase"),
            _REASON,
            _col("Metric", ".spec.objective.metric"),
            _col("Best", ".status.bestTrial.value", "number", desc="The best trial's value"),
            _col("Best Trial", ".status.bestTrial.name"),
            _col("Trials", ".status.trialsDone", desc="Finished trials / maxTrials"),
            _col("Running", ".status.counts.running", "integer"),
            _col("Pruned", ".status.counts.pruned", "integer", priority=1),
            _col("Failed", ".status.counts.failed", "integer", priority=1),
            _col("Model", ".status.bestTrial.modelUri", priority=1),
            _MESSAGE,
            _AGE,
        ],
    )
)

KINDS.append(
    Kind(
        "BatchPrediction",
        "batchpredictions",
        "bp",
        BatchPredictionSpec,
        BatchPredictionStatus,
        "A dataset scored once with a model (a URI, a TrainingJob's or what a ModelDeployment "
        "serves), sharded over the pods of an Indexed Job; `kubectl get bp` shows rows and "
        "rows/s.",
        [
            _col("Phase", ".status.phase"),
            _REASON,
            _col("Rows", ".status.progress.rowsDone", "integer", desc="Rows scored so far"),
            _col("Total", ".status.progress.rowsTotal", "integer", priority=1),
            _col("Progress", ".status.progress.percent", "number", desc="Percent of rows done"),
            _col("Rows/s", ".status.progress.rowsPerSecond", "number", desc="Rows per second"),
            _col("ETA", ".status.progress.estimatedRemainingSeconds", "integer", priority=1),
            _col("Pods", ".spec.parallelism", "integer"),
            _col("Model", ".status.model.uri", priority=1),
            _col("Output", ".spec.output.uri", priority=1),
            _MESSAGE,
            _AGE,
        ],
    )
)

KIND_BY_NAME = {k.kind: k for k in KINDS}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $refs, flatten Optional unions and drop what a structural schema forbids."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"union types are not structural: {branches}")
        node = {**branches[0], **node}
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        node = {**target, **node}
    for bound in ("Minimum", "Maximum"):
        # JSON Schema's numeric exclusive bounds are OpenAPI v3.0 booleans.
        if isinstance(node.get(f"exclusive{bound}"), int | float) and not isinstance(
            node.get(f"exclusive{bound}"), bool
        ):
            node[bound.lower()] = node[f"exclusive{bound}"]
            node[f"exclusive{bound}"] = True
    if node.get("default", "absent") is None:
        node.pop("default")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _resolve(value, defs)
        elif key == "additionalProperties" and isinstance(value, bool):
            continue  # `true` is what x-kubernetes-preserve-unknown-fields says
        else:
            out[key] = value
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    if out.get("description"):
        out["description"] = _with_facts(out["description"], out)
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _with_facts(description: str, node: dict[str, Any]) -> str:
    """The description with what the schema enforces, for `kubectl explain`, which
    shows descriptions but not defaults or bounds."""
    facts = []
    if "default" in node and node["default"] not in ({}, []):
        facts.append(f"Default: {json.dumps(node['default'])}.")
    low, high = node.get("minimum"), node.get("maximum")
    open_low = " (exclusive)" if node.get("exclusiveMinimum") is True else ""
    open_high = " (exclusive)" if node.get("exclusiveMaximum") is True else ""
    if low is not None and high is not None:
        facts.append(f"Range: {_number(low)}{open_low} to {_number(high)}{open_high}.")
    elif low is not None:
        facts.append(f"Minimum: {_number(low)}{open_low}.")
    elif high is not None:
        facts.append(f"Maximum: {_number(high)}{open_high}.")
    if node.get("enum"):
        facts.append("One of: " + ", ".join(str(v) for v in node["enum"]) + ".")
    if not facts:
        return description
    return (
        description.rstrip()
        + ("" if description.rstrip().endswith(".") else ".")
        + (" " + " ".join(facts))
    )


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _resolve(raw, defs)


def crd_for(kind: Kind) -> dict[str, Any]:
    spec_schema = schema_for(kind.spec)
    spec_schema["description"] = f"Desired state of the {kind.kind}."
    status_schema = schema_for(kind.status)
    status_schema["description"] = f"Observed state of the {kind.kind}, written by Kubeloop."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": dict(INSTALLED_BY),
        },
        "spec": {
            "group": GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": kind.columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                # What a resource the operator has not yet seen reads as:
                                # generation 1 not observed, which kstatus (Flux's health
                                # checks) and the Argo CD checks take as in progress, not as
                                # a status-less resource that is done.
                                "status": {**status_schema, "default": UNOBSERVED_STATUS},
                            },
                            **({"x-kubernetes-validations": kind.rules} if kind.rules else {}),
                        }
                    },
                }
            ],
        },
    }


def render_yaml(kind: Kind) -> str:
    header = "# Generated by `kubeloop crds` from operator/kubeloop/api; do not edit.\n"
    return header + yaml.safe_dump(crd_for(kind), sort_keys=False, width=100)


def write_crds(directory: str | Path) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in KINDS:
        path = out / f"{GROUP}_{kind.plural}.yaml"
        path.write_text(render_yaml(kind))
        paths.append(path)
    return paths
