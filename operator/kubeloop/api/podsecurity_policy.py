"""ValidatingAdmissionPolicies that keep the pods made from a user's spec within Pod
Security "restricted" unless a ComputeTemplate allows more (kubeloop/podsecurity.py
holds the same rules for the operator, worded alike; docs/operations.md, "Pod
security"). Two policies per kind:

- `kubeloop-pod-security-<plural>`, without a parameter, for resources that name no
  template: restricted, nothing more;
- `kubeloop-pod-security-template-<plural>`, with every ComputeTemplate as its
  parameter (like the compute-template policies in admission.py), for resources that
  name one: restricted plus the template's `podSecurity`, where it lists the
  resource's namespace.

A resource that names a template that does not exist passes both (no parameter
matches): the operator holds it (ComputeTemplateNotFound), then checks it against the
template once it exists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from kubeloop.api.admission import VALIDATIONS, Rule, violations
from kubeloop.api.computetemplate import (
    APPARMOR_ALLOWED,
    APPARMOR_PREFIX,
    RESTRICTED_VOLUME_TYPES,
)
from kubeloop.names import API_VERSION, GROUP, INSTALLED_BY, VERSION

FILE = "kubeloop-pod-security.yaml"


class Allowance(NamedTuple):
    """CEL fragments of what a policy allows beyond restricted, and how it says no."""

    volume_type: Callable[[str], str]  # true when the volume kind (CEL `k`) is allowed
    service_account: str  # true when `variables.s.serviceAccountName` is allowed
    root: str  # true when runAsRoot is allowed
    refusal: Callable[[str, str], str]  # (prefix, template field) -> CEL of the words


def _restricted_refusal(prefix: str, field: str) -> str:
    return (
        "', which Pod Security restricted does not allow: name a ComputeTemplate that "
        f"allows it in {prefix}.compute (podSecurity.{field})'"
    )


def _template_refusal(prefix: str, field: str) -> str:
    return (
        "', which ComputeTemplate ' + params.metadata.name + ' does not allow in namespace "
        f"' + request.namespace + ' (podSecurity.{field})'"
    )


RESTRICTED = Allowance(lambda k: "false", "false", "false", _restricted_refusal)

_P = "variables.t.podSecurity"


def _listed(field: str, value: str) -> str:
    listed = f"{_P}.{field}"
    return f"(variables.allowed && has({listed}) && ('*' in {listed} || {value} in {listed}))"


TEMPLATE = Allowance(
    lambda k: _listed("volumeTypes", k),
    _listed("serviceAccountNames", "variables.s.serviceAccountName"),
    f"(variables.allowed && has({_P}.runAsRoot) && {_P}.runAsRoot)",
    _template_refusal,
)


def rules(prefix: str, training: bool, allowance: Allowance) -> list[Rule]:
    s = "variables.s"
    account = Rule(
        f"!has({s}.serviceAccountName) || {s}.serviceAccountName == 'default' || "
        f"{allowance.service_account}",
        f"'{prefix}.serviceAccountName is ' + {s}.serviceAccountName + "
        f"{allowance.refusal(prefix, 'serviceAccountNames')}",
    )
    if not training:
        return [account]
    restricted = repr(list(RESTRICTED_VOLUME_TYPES))
    kind_ok = f"k == 'name' || k in {restricted} || {allowance.volume_type('k')}"
    volumes = Rule(
        f"!has({s}.volumes) || {s}.volumes.all(v, v.all(k, {kind_ok}))",
        f"{s}.volumes.filter(v, !v.all(k, {kind_ok})).map(v, '{prefix}.volumes: ' + "
        "(has(v.name) ? string(v.name) : '') + ' is a ' + "
        "v.filter(k, k != 'name').join(', ') + ' volume' + "
        f"{allowance.refusal(prefix, 'volumeTypes')}).join('; ')",
    )
    notes = f"{s}.podMetadata.annotations"
    profile_ok = (
        f"!k.startsWith('{APPARMOR_PREFIX}') || {notes}[k] == 'runtime/default' || "
        f"{notes}[k].startsWith('localhost/')"
    )
    apparmor = Rule(
        f"!has({s}.podMetadata) || !has({notes}) || {notes}.all(k, {profile_ok})",
        f"{notes}.filter(k, !({profile_ok})).map(k, '{prefix}.podMetadata.annotations: ' + "
        f"k + ' is ' + {notes}[k] + ', which Pod Security restricted does not allow "
        f"({APPARMOR_ALLOWED})').join('; ')",
    )
    root = Rule(
        f"!has({s}.runAsRoot) || !{s}.runAsRoot || {allowance.root}",
        f"'{prefix}.runAsRoot is true' + {allowance.refusal(prefix, 'runAsRoot')}",
    )
    return [volumes, account, apparmor, root]


# (resource plural, CEL of the spec, whether it exists, field prefix, training?)
TARGETS = [
    ("trainingjobs", "object.spec", "true", "spec", True),
    ("modeldeployments", "object.spec", "true", "spec", False),
    (
        "driftmonitors",
        "object.spec.onDrift.retrain.template",
        "has(object.spec.onDrift) && has(object.spec.onDrift.retrain) && "
        "has(object.spec.onDrift.retrain.template)",
        "spec.onDrift.retrain.template",
        True,
    ),
]


def _match(plural: str) -> dict[str, Any]:
    return {
        "resourceRules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": [VERSION],
                "operations": ["CREATE", "UPDATE"],
                "resources": [plural],
            }
        ]
    }


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(INSTALLED_BY)},
        "spec": spec,
    }


def _binding(name: str, param_ref: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"policyName": name, "validationActions": ["Deny"]}
    if param_ref is not None:
        spec["paramRef"] = param_ref
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": dict(INSTALLED_BY)},
        "spec": spec,
    }


def policies() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for plural, spec, exists, prefix, training in TARGETS:
        named = f"has({spec}.compute) && {spec}.compute != ''"
        name = f"kubeloop-pod-security-{plural}"
        docs.append(
            _policy(
                name,
                {
                    "failurePolicy": "Fail",
                    "matchConstraints": _match(plural),
                    "variables": [
                        {"name": "applies", "expression": f"{exists} && !({named})"},
                        {"name": "s", "expression": spec},
                        {
                            "name": "violations",
                            "expression": violations(rules(prefix, training, RESTRICTED)),
                        },
                    ],
                    "validations": VALIDATIONS,
                },
            )
        )
        docs.append(_binding(name, None))
        name = f"kubeloop-pod-security-template-{plural}"
        docs.append(
            _policy(
                name,
                {
                    "failurePolicy": "Fail",
                    "paramKind": {"apiVersion": API_VERSION, "kind": "ComputeTemplate"},
                    "matchConstraints": _match(plural),
                    "variables": [
                        {
                            "name": "applies",
                            "expression": f"{exists} && {named} && "
                            f"{spec}.compute == params.metadata.name",
                        },
                        {"name": "s", "expression": spec},
                        {"name": "t", "expression": "params.spec"},
                        {
                            "name": "allowed",
                            "expression": f"has({_P}) && ('*' in {_P}.namespaces || "
                            f"request.namespace in {_P}.namespaces)",
                        },
                        {
                            "name": "violations",
                            "expression": violations(rules(prefix, training, TEMPLATE)),
                        },
                    ],
                    "validations": VALIDATIONS,
                },
            )
        )
        docs.append(_binding(name, {"selector": {}, "parameterNotFoundAction": "Allow"}))
    return docs


def render_yaml() -> str:
    head = (
        "# Generated by `kubeloop crds` from operator/kubeloop/api/podsecurity_policy.py; "
        "do not edit.\n"
    )
    return head + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=100) for d in policies())


def write(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    path.write_text(render_yaml())
    return path
