"""Least privilege, read off the rendered chart: no wildcard anywhere, no Secrets, no
verb that grants more power (escalate, bind, impersonate), and every write permission
is one the operator has a named reason and a named test for. A new write rule fails
here until it is listed with both."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.kubetest import ROOT, tool

CHART = ROOT / "charts" / "kubeloop"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
POWER_VERBS = {"escalate", "bind", "impersonate", "approve", "sign"}

# (apiGroup, resource, verb) -> (why, the test that fails without it).
WRITES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("kubeloop.io", "trainingjobs", "create"): (
        "a DriftMonitor's retrain (server-side apply creates)",
        "e2e/test_least_privilege.py::test_all_three_kinds_through_their_main_paths"),
    ("kubeloop.io", "trainingjobs", "patch"): (
        "the retrain's server-side apply", "e2e/real/test_closed_loop.py"),
    ("kubeloop.io", "modeldeployments", "patch"): (
        "a promotion by a DriftMonitor", "e2e/real/test_safe_retraining.py"),
    ("kubeloop.io", "trainingjobs/status", "patch"): (
        "status", "e2e/test_least_privilege.py::test_all_three_kinds_through_their_main_paths"),
    ("kubeloop.io", "modeldeployments/status", "patch"): (
        "status", "e2e/test_least_privilege.py::test_all_three_kinds_through_their_main_paths"),
    ("kubeloop.io", "driftmonitors/status", "patch"): (
        "status; the one-time move of a 0.1 count", "tests/integration/test_upgrade.py"),
    ("kubeloop.io", "computetemplates/status", "patch"): (
        "a template's counts", "e2e/test_compute_templates.py"),
    ("batch", "jobs", "create"): (
        "the Job of an attempt, an evaluation Job", "e2e/real/test_train_and_serve.py"),
    ("batch", "jobs", "patch"): (
        "suspend and resume", "tests/integration/test_trainingjob.py"),
    ("batch", "jobs", "delete"): (
        "gang restart, deadline, spec change", "e2e/real/test_failures.py"),
    ("apps", "deployments", "create"): (
        "the stable and canary Deployments", "e2e/real/test_train_and_serve.py"),
    ("apps", "deployments", "patch"): ("a rollout", "e2e/real/test_closed_loop.py"),
    ("apps", "deployments", "delete"): (
        "the canary's when it goes", "tests/integration/test_modeldeployment.py"),
    ("gateway.networking.k8s.io", "httproutes", "create"): (
        "the HTTPRoute of spec.route", "tests/integration/test_canary.py"),
    ("gateway.networking.k8s.io", "httproutes", "patch"): (
        "its weights as the canary moves", "tests/integration/test_canary.py"),
    ("gateway.networking.k8s.io", "httproutes", "delete"): (
        "when spec.route goes", "tests/integration/test_canary.py"),
    ("autoscaling", "horizontalpodautoscalers", "create"): (
        "the HPA", "e2e/real/test_autoscaling.py"),
    ("autoscaling", "horizontalpodautoscalers", "patch"): (
        "the HPA's bounds", "tests/integration/test_modeldeployment.py"),
    ("autoscaling", "horizontalpodautoscalers", "delete"): (
        "autoscaling removed", "tests/integration/test_modeldeployment.py"),
    ("", "services", "create"): (
        "the model's Service, the rendezvous Service", "e2e/real/test_train_and_serve.py"),
    ("", "services", "patch"): (
        "the Service's port", "tests/integration/test_modeldeployment.py"),
    ("", "events", "create"): (
        "Events on the resources", "e2e/test_kubectl_user.py"),
    ("kopf.dev", "kopfpeerings", "patch"): (
        "peering of several replicas (replicas > 1)", "e2e/test_peering.py"),
    ("kopf.dev", "clusterkopfpeerings", "patch"): (
        "peering of several replicas (replicas > 1)", "e2e/test_peering.py"),
}

VALUES = {
    "default": [],
    "scoped": ["--set", "watchNamespaces={a,b}"],
    "replicas": ["--set", "replicas=2"],
    "scoped-replicas": ["--set", "watchNamespaces={a}", "--set", "replicas=2"],
}


def rules(values: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        [tool("helm"), "template", "kubeloop", str(CHART), "-n", "kubeloop-system", *values],
        capture_output=True, text=True, check=True,
    ).stdout
    found = []
    for doc in yaml.safe_load_all(out):
        if doc and doc.get("kind") in ("ClusterRole", "Role"):
            found += doc.get("rules") or []
    assert found, "the chart renders no RBAC rules"
    return found


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return rules(VALUES[request.param])


def test_no_wildcards_secrets_or_power_verbs(rendered: list[dict[str, Any]]) -> None:
    for rule in rendered:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in (rule.get(field) or []), rule
        assert not {"secrets", "serviceaccounts/token"} & set(rule.get("resources") or []), rule
        assert not POWER_VERBS & set(rule.get("verbs") or []), rule


def test_every_write_has_a_reason_and_a_test(rendered: list[dict[str, Any]]) -> None:
    writes = {
        (group, resource, verb)
        for rule in rendered
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
        if verb in WRITE_VERBS
    }
    unexplained = sorted(writes - set(WRITES))
    assert not unexplained, f"write permissions without a reason in WRITES: {unexplained}"
    for _, test in (WRITES[w] for w in writes):
        assert (ROOT / test.split("::")[0]).is_file(), test
