"""The generator of the apply-time rules: every location carries the location rules,
each rule is its own validation with its own message, a finished TrainingJob's spec
is immutable, and a ComputeTemplate policy reports every failing rule in one message.
What the API server does with them: tests/integration/test_crd_validation.py."""

from __future__ import annotations

from typing import Any

from kubeloop.api import admission
from kubeloop.api.common import LOCATION_RULES
from kubeloop.api.crdgen import KIND_BY_NAME, KINDS, crd_for
from kubeloop.api.docgen import render_reference
from kubeloop.api.trainingjob import FINISHED_SPEC_IMMUTABLE, HYPERPARAMETER_RULES


def _schema(kind: str) -> dict[str, Any]:
    crd = crd_for(KIND_BY_NAME[kind])
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _uri_fields(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            where = f"{path}.{name}"
            if name == "uri":
                found.append((where, prop))
            found += _uri_fields(prop, where)
        if isinstance(node.get("items"), dict):
            found += _uri_fields(node["items"], path + "[]")
    return found


def test_every_model_and_data_location_carries_the_location_rules() -> None:
    seen = set()
    for kind in KINDS:
        for path, prop in _uri_fields(_schema(kind.kind)["properties"]["spec"]):
            if path.startswith(".") and kind.kind != "ComputeTemplate":
                assert prop.get("x-kubernetes-validations", [])[: len(LOCATION_RULES)] == (
                    LOCATION_RULES
                ), f"{kind.kind} spec{path}"
                seen.add(f"{kind.kind} spec{path}")
    assert {
        "ModelDeployment spec.model.uri",
        "ModelDeployment spec.canary.model.uri",
        "TrainingJob spec.dataset.uri",
        "TrainingJob spec.output.uri",
        "DriftMonitor spec.onDrift.retrain.template.output.uri",
        "DriftMonitor spec.onDrift.evaluate.data.uri",
    } <= seen


def test_each_rule_is_its_own_entry_with_its_own_message() -> None:
    """One mistake, one rule, one message: the API server reports every failing rule,
    so none is folded into another's `&&`."""
    for rules in (LOCATION_RULES, HYPERPARAMETER_RULES):
        messages = [r["message"] for r in rules]
        assert len(set(messages)) == len(messages)
        assert all(r["rule"] and r["message"] for r in rules)
    scheme = LOCATION_RULES[0]
    assert "gs://" in scheme["message"]  # named, so a user knows it is not a typo
    assert "substring" in scheme["messageExpression"]  # the scheme the user wrote


def test_a_finished_training_jobs_spec_is_immutable_at_the_schema_root() -> None:
    root = _schema("TrainingJob")
    assert root["x-kubernetes-validations"] == [FINISHED_SPEC_IMMUTABLE]
    rule = FINISHED_SPEC_IMMUTABLE["rule"]
    assert "oldSelf.status.phase in ['Succeeded', 'Failed']" in rule
    assert rule.endswith("self.spec == oldSelf.spec")
    assert FINISHED_SPEC_IMMUTABLE["fieldPath"] == ".spec"
    for other in ("ModelDeployment", "DriftMonitor", "ComputeTemplate"):
        assert "x-kubernetes-validations" not in _schema(other)
    assert "Rule: spec is immutable once the TrainingJob has finished" in render_reference(
        KIND_BY_NAME["TrainingJob"]
    )


def test_each_compute_template_policy_reports_every_failing_rule_at_once() -> None:
    """The API server denies with the first failing validation of a policy only: each
    policy has one validation, whose message joins the messages of all failing rules."""
    policies = [d for d in admission.policies() if d["kind"] == "ValidatingAdmissionPolicy"]
    assert len(policies) == 4
    # TrainingJob, ModelDeployment, a DriftMonitor's retrain template: 10, 7, 10 rules;
    # BatchPrediction: no GPU fields (one rule: the template gives none), 8.
    sizes = {"trainingjobs": 10, "modeldeployments": 7, "driftmonitors": 10,
             "batchpredictions": 8}
    for policy, (plural, _, _, rules) in zip(policies, admission.TARGETS, strict=True):
        spec = policy["spec"]
        assert spec["validations"] == admission.VALIDATIONS
        (validation,) = spec["validations"]
        assert validation["messageExpression"] == "variables.violations.join('; ')"
        variables = {v["name"]: v["expression"] for v in spec["variables"]}
        assert variables["violations"] == admission.violations(rules)
        # One term per rule, each with its own message, evaluated only when it fails.
        for rule in rules:
            assert f"(({rule.holds}) ? [] : [{rule.message}])" in variables["violations"]
        assert len(rules) == sizes[plural], plural
        assert "applies" not in variables["violations"]


def test_violations_joins_one_term_per_rule() -> None:
    rules = [admission.Rule("a == 1", "'a'"), admission.Rule("b", "'b is ' + string(b)")]
    assert admission.violations(rules) == (
        "((a == 1) ? [] : ['a']) + ((b) ? [] : ['b is ' + string(b)])"
    )

