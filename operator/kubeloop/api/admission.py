"""ValidatingAdmissionPolicies that hold TrainingJobs, ModelDeployments, DriftMonitor
retrain templates and BatchPredictions to the ComputeTemplate they name: a request for
more (workers or parallelism, run
time, another GPU type, a changed node selector) is refused at `kubectl apply` time,
with a message that names the field and the template's limit. No webhook runs: the API
server evaluates the CEL itself, with each ComputeTemplate as the policy's parameter
(the binding selects all of them; only the one a resource names applies to it). The
operator checks the same rules again (kubeloop/compute.py).

Every rule is its own (condition, message) pair, but a policy holds them in one
validation: the API server denies with the message of the first failing validation
only (the dispatcher reports `deniedDecisions[0]`), so one validation per rule would
show one overreach per `kubectl apply`. The one validation collects the message of
every rule that fails (`variables.violations`) and reports them all, joined by "; "."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import yaml

from kubeloop.names import API_VERSION, GROUP, INSTALLED_BY, VERSION

FILE = "kubeloop-compute-templates.yaml"


class Rule(NamedTuple):
    """One limit of a template: `holds` is CEL that is true when the checked spec keeps
    to it (only evaluated when the template applies); `message` is CEL of the words."""

    holds: str
    message: str


def violations(rules: list[Rule]) -> str:
    """CEL of the list of the messages of the rules that fail (lazily: a message is
    only built for a rule that fails)."""
    return " + ".join(f"(({rule.holds}) ? [] : [{rule.message}])" for rule in rules)


# The policy's one validation, reporting every failing rule at once.
VALIDATIONS: list[dict[str, Any]] = [
    {
        "expression": "!variables.applies || size(variables.violations) == 0",
        "messageExpression": "variables.violations.join('; ')",
        "reason": "Invalid",
    }
]


def _unset(root: str, path: str) -> str:
    """True when `root.path` or any step on the way is unset (CEL's has() needs the
    parent to exist)."""
    parts = path.split(".")
    steps = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return "(" + " || ".join(f"!has({root}.{step})" for step in steps) + ")"


def _has(path: str) -> str:
    return _unset("variables.s", path)


def _fixed(field: str, path: str, template_path: str, compare: str | None = None) -> Rule:
    """`path` of the checked spec `s` must be unset or equal the template's value."""
    have, fixed = f"variables.s.{path}", f"variables.t.{template_path}"
    return Rule(
        f"{_unset('variables.t', template_path)} || {_has(path)} || "
        f"{compare or f'{have} == {fixed}'}",
        f"'{field} is ' + string({have}) + ', but ComputeTemplate ' + params.metadata.name + "
        f"' fixes it at ' + string({fixed})",
    )


def _checks(prefix: str, training: bool, pods: str = "workers", gpu: bool = True) -> list[Rule]:
    """The rules for a spec at `prefix`; `training`: a run (queue, pods, run time), its
    pods counted by the field `pods`; `gpu`: the spec has a `gpu` field."""
    rules = [
        _fixed(f"{prefix}.resources.cpu", "resources.cpu", "cpu"),
        _fixed(f"{prefix}.resources.memory", "resources.memory", "memory"),
    ]
    if gpu:
        rules += _gpu_checks(prefix)
    else:
        rules.append(
            Rule(
                "!has(variables.t.gpu) || !has(variables.t.gpu.count) || "
                "variables.t.gpu.count == 0",
                "'ComputeTemplate ' + params.metadata.name + ' gives GPUs; these pods use none'",
            )
        )
    rules += _placement_checks(prefix)
    if training:
        rules += _run_checks(prefix, pods)
    return rules


def _gpu_checks(prefix: str) -> list[Rule]:
    return [
        _fixed(f"{prefix}.gpu.count", "gpu.count", "gpu.count"),
        _fixed(f"{prefix}.gpu.resourceName", "gpu.resourceName", "gpu.resourceName"),
        Rule(
            f"!has(variables.t.gpu) || {_has('gpu.type')} || "
            "(has(variables.t.gpu.type) && variables.s.gpu.type == variables.t.gpu.type)",
            f"'{prefix}.gpu.type is ' + variables.s.gpu.type + ', but ComputeTemplate ' + "
            "params.metadata.name + (has(variables.t.gpu.type) ? ' fixes it at ' + "
            "variables.t.gpu.type : ' leaves gpu.type unset')",
        ),
    ]


def _placement_checks(prefix: str) -> list[Rule]:
    return [
        _fixed(
            f"{prefix}.scheduling.priorityClassName",
            "scheduling.priorityClassName",
            "priorityClassName",
        ),
        Rule(
            "!has(variables.t.nodeSelector) || "
            f"{_has('scheduling.nodeSelector')} || variables.t.nodeSelector.all(k, "
            "!(k in variables.s.scheduling.nodeSelector) || "
            "variables.s.scheduling.nodeSelector[k] == variables.t.nodeSelector[k])",
            f"'{prefix}.scheduling.nodeSelector changes a label that ComputeTemplate ' + "
            "params.metadata.name + ' fixes: ' + variables.t.nodeSelector.filter(k, "
            "k in variables.s.scheduling.nodeSelector && "
            "variables.s.scheduling.nodeSelector[k] != variables.t.nodeSelector[k])"
            ".map(k, k + '=' + variables.t.nodeSelector[k]).join(', ')",
        ),
    ]


def _run_checks(prefix: str, pods: str) -> list[Rule]:
    return [
        _fixed(f"{prefix}.scheduling.queueName", "scheduling.queueName", "queueName"),
        Rule(
            f"!has(variables.t.maxWorkers) || !has(variables.s.{pods}) || "
            f"variables.s.{pods} <= variables.t.maxWorkers",
            f"'{prefix}.{pods} is ' + string(variables.s.{pods}) + ', more than "
            "ComputeTemplate ' + params.metadata.name + ' allows (maxWorkers ' + "
            "string(variables.t.maxWorkers) + ')'",
        ),
        Rule(
            "!has(variables.t.maxRunSeconds) || "
            "!has(variables.s.activeDeadlineSeconds) || "
            "variables.s.activeDeadlineSeconds <= variables.t.maxRunSeconds",
            f"'{prefix}.activeDeadlineSeconds is ' + "
            "string(variables.s.activeDeadlineSeconds) + ', longer than ComputeTemplate ' "
            "+ params.metadata.name + ' allows (maxRunSeconds ' + "
            "string(variables.t.maxRunSeconds) + ')'",
        ),
    ]


# (resource plural, CEL of the spec to check, whether it exists, its rules)
TARGETS = [
    ("trainingjobs", "object.spec", "true", _checks("spec", True)),
    ("modeldeployments", "object.spec", "true", _checks("spec", False)),
    (
        "driftmonitors",
        "object.spec.onDrift.retrain.template",
        "has(object.spec.onDrift) && has(object.spec.onDrift.retrain) && "
        "has(object.spec.onDrift.retrain.template)",
        _checks("spec.onDrift.retrain.template", True),
    ),
    (
        "batchpredictions",
        "object.spec",
        "true",
        _checks("spec", True, pods="parallelism", gpu=False),
    ),
]


def policies() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for plural, spec, exists, rules in TARGETS:
        name = f"kubeloop-compute-template-{plural}"
        labels = dict(INSTALLED_BY)
        docs.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "failurePolicy": "Fail",
                    "paramKind": {"apiVersion": API_VERSION, "kind": "ComputeTemplate"},
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": [GROUP],
                                "apiVersions": [VERSION],
                                "operations": ["CREATE", "UPDATE"],
                                "resources": [plural],
                            }
                        ]
                    },
                    # Variables are evaluated when first used: `s` and `violations`
                    # only once `applies`.
                    "variables": [
                        {
                            "name": "applies",
                            "expression": f"{exists} && has({spec}.compute) && "
                            f"{spec}.compute == params.metadata.name",
                        },
                        {"name": "s", "expression": spec},
                        {"name": "t", "expression": "params.spec"},
                        {"name": "violations", "expression": violations(rules)},
                    ],
                    "validations": VALIDATIONS,
                },
            }
        )
        docs.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "policyName": name,
                    "validationActions": ["Deny"],
                    # Every template is a parameter; the rules skip all but the named one.
                    "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
                },
            }
        )
    return docs


def render_yaml() -> str:
    head = "# Generated by `kubeloop crds` from operator/kubeloop/api/admission.py; do not edit.\n"
    return head + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=100) for d in policies())


def write(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    path.write_text(render_yaml())
    return path
