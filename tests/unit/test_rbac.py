"""Least privilege, read off the rendered chart: no wildcard anywhere, no Secrets, no
verb that grants more power (escalate, bind, impersonate), and every write permission
is one the operator has a named reason and a named test for. A new write rule fails
here until it is listed with both. The chart's roles for people (aggregated into the
built-in admin, edit and view) are not the operator's: they are held to Kubernetes'
convention instead."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.kubetest import ROOT, tool
from tests.rbac import AGGREGATE_LABEL, operators_role

CHART = ROOT / "charts" / "kubeloop"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
POWER_VERBS = {"escalate", "bind", "impersonate", "approve", "sign"}

# (apiGroup, resource, verb) -> (why, the test that fails without it). The tests run
# the operator with the chart's RBAC; `make rbac-necessity` (hack/rbac_necessity.py)
# takes each verb away in turn, before anything runs, and checks that its test then fails
# in its own body (an assertion on a condition, a status, an object or an Event the
# product writes; the harness's refusal checks only record while a verb is away), with
# the API server's refusal of that verb in its output. The reason is why the code needs
# it; the test shows the first place it is needed, which for a server-side apply is the
# create.
DRIFT = "tests/integration/test_drift_loop.py::"
TJ = "tests/integration/test_trainingjob.py::"
MDT = "tests/integration/test_modeldeployment.py::"
BP = "tests/integration/test_batchprediction.py::"
WRITES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("kubeloop.io", "trainingjobs", "create"): (
        "a DriftMonitor's retrain (server-side apply creates)",
        DRIFT + "test_drift_retrains_once_and_promotes"),
    ("kubeloop.io", "trainingjobs", "patch"): (
        "the retrain's server-side apply", DRIFT + "test_drift_retrains_once_and_promotes"),
    ("kubeloop.io", "experiments", "create"): (
        "a DriftMonitor's retrain that is a search (server-side apply creates)",
        DRIFT + "test_a_retrain_that_is_a_search_puts_its_best_trial_before_the_gate"),
    ("kubeloop.io", "experiments", "patch"): (
        "the search retrain's server-side apply",
        DRIFT + "test_a_retrain_that_is_a_search_puts_its_best_trial_before_the_gate"),
    ("kubeloop.io", "modeldeployments", "patch"): (
        "a promotion by a DriftMonitor", DRIFT + "test_drift_retrains_once_and_promotes"),
    ("kubeloop.io", "trainingjobs/status", "patch"): (
        "status", TJ + "test_unknown_gpu_type_is_unschedulable"),
    ("kubeloop.io", "modeldeployments/status", "patch"): (
        "status", MDT + "test_children_are_created_owned_and_ready"),
    ("kubeloop.io", "driftmonitors/status", "patch"): (
        "status; the one-time move of a 0.1 count", DRIFT + "test_too_few_samples_is_collecting"),
    ("kubeloop.io", "experiments/status", "patch"): (
        "status: the trials, the search's only memory beside their TrainingJobs",
        "tests/integration/test_experiment.py::"
        "test_parallel_trials_and_the_best_model_in_status"),
    ("kubeloop.io", "batchpredictions/status", "patch"): (
        "status", BP + "test_from_model_deployment_records_the_served_model"),
    ("kubeloop.io", "computetemplates/status", "patch"): (
        "a template's counts",
        "e2e/test_compute_templates.py::"
        "test_the_chart_ships_the_policy_and_a_menu_the_operator_counts"),
    ("batch", "jobs", "create"): (
        "the Job of an attempt, an evaluation Job",
        TJ + "test_distributed_gpu_job_runs_on_both_gpu_nodes_and_succeeds"),
    ("batch", "jobs", "patch"): (
        "server-side apply of the Job (creating one is a patch too); suspend, resume",
        TJ + "test_suspend_frees_the_pods_and_resume_finishes"),
    ("batch", "jobs", "delete"): (
        "gang restart, deadline, spec change",
        TJ + "test_failed_worker_restarts_the_gang_then_fails_after_max_restarts"),
    ("apps", "deployments", "create"): (
        "the stable and canary Deployments", MDT + "test_children_are_created_owned_and_ready"),
    ("apps", "deployments", "patch"): (
        "server-side apply of the Deployments (creating one is a patch too)",
        MDT + "test_children_are_created_owned_and_ready"),
    ("apps", "deployments", "delete"): (
        "the canary's when it goes", MDT + "test_canary_split_by_replica_ratio_and_promotion"),
    ("gateway.networking.k8s.io", "httproutes", "create"): (
        "the HTTPRoute of spec.route",
        "tests/integration/test_canary.py::test_route_carries_the_exact_share"),
    ("gateway.networking.k8s.io", "httproutes", "patch"): (
        "server-side apply of the route (creating one is a patch too), its weights",
        "tests/integration/test_canary.py::test_route_carries_the_exact_share"),
    ("gateway.networking.k8s.io", "httproutes", "delete"): (
        "when spec.route goes",
        "tests/integration/test_canary.py::test_route_carries_the_exact_share"),
    ("autoscaling", "horizontalpodautoscalers", "create"): (
        "the HPA", MDT + "test_children_are_created_owned_and_ready"),
    ("autoscaling", "horizontalpodautoscalers", "patch"): (
        "server-side apply of the HPA (creating one is a patch too)",
        MDT + "test_children_are_created_owned_and_ready"),
    ("autoscaling", "horizontalpodautoscalers", "delete"): (
        "autoscaling removed", MDT + "test_autoscaling_removed_deletes_the_hpa"),
    ("", "services", "create"): (
        "the model's Service, the rendezvous Service",
        MDT + "test_children_are_created_owned_and_ready"),
    ("", "services", "patch"): (
        "server-side apply of the Services (creating one is a patch too)",
        MDT + "test_children_are_created_owned_and_ready"),
    ("", "services", "delete"): (
        "the shadow's Service when spec.shadow goes",
        "tests/integration/test_shadow.py::"
        "test_shadow_gets_its_own_deployment_unseen_by_clients_and_goes"),
    ("", "events", "create"): (
        "Events on the resources (`kubectl describe`: why a job cannot run)",
        TJ + "test_worker_that_can_never_fit_is_reported_unschedulable_at_once"),
    ("kopf.dev", "kopfpeerings", "patch"): (
        "peering of several replicas (replicas > 1)",
        "e2e/test_peering.py::test_two_replicas_exactly_one_active_then_failover[namespaced]"),
    ("kopf.dev", "clusterkopfpeerings", "patch"): (
        "peering of several replicas (replicas > 1)",
        "e2e/test_peering.py::test_two_replicas_exactly_one_active_then_failover[clusterwide]"),
}

VALUES = {
    "default": [],
    "scoped": ["--set", "watchNamespaces={a,b}"],
    "replicas": ["--set", "replicas=2"],
    "scoped-replicas": ["--set", "watchNamespaces={a}", "--set", "replicas=2"],
}


def rendered_docs(values: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        [tool("helm"), "template", "kubeloop", str(CHART), "-n", "kubeloop-system", *values],
        capture_output=True, text=True, check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def rules(values: list[str]) -> list[dict[str, Any]]:
    """The rules of the operator's own Roles and ClusterRoles (not the roles for
    people, templates/user-roles.yaml)."""
    found = []
    for doc in rendered_docs(values):
        if operators_role(doc):
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
        path, _, name = test.partition("::")
        assert (ROOT / path).is_file(), test
        function = name.split("[")[0]  # a parametrized test's id names one case
        assert f"def {function}(" in (ROOT / path).read_text(), f"{test}: no such test"


NAMESPACED_KINDS = {
    "trainingjobs", "modeldeployments", "driftmonitors", "experiments", "batchpredictions"}
READ_VERBS = {"get", "list", "watch"}


def user_roles(values: list[str]) -> dict[str, dict[str, Any]]:
    """The chart's roles for people, by the built-in role they are aggregated into
    (`view`, `edit`, `admin`): name -> role."""
    return {doc["metadata"]["name"]: doc for doc in rendered_docs(values)
            if doc["kind"] in ("Role", "ClusterRole") and not operators_role(doc)}


def aggregated_into(role: str, roles: dict[str, dict[str, Any]]) -> set[tuple[str, str, str]]:
    """What the roles labelled `aggregate-to-<role>` add to the built-in one."""
    return {
        (group, resource, verb)
        for doc in roles.values()
        if doc["metadata"]["labels"].get(AGGREGATE_LABEL + role) == "true"
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_users_get_the_kinds_through_the_built_in_roles() -> None:
    """view reads the namespaced kinds and their status; edit and admin also write
    them (never their status, which is the operator's); ComputeTemplates are read by
    all three and written by none (cluster administrators only); and every signed-in
    user may read them, since a RoleBinding cannot grant a cluster-scoped kind."""
    roles = user_roles([])
    reads = {("kubeloop.io", r, v) for r in NAMESPACED_KINDS | {f"{k}/status" for k in
             NAMESPACED_KINDS} | {"computetemplates", "computetemplates/status"}
             for v in READ_VERBS}
    writes = {("kubeloop.io", r, v) for r in NAMESPACED_KINDS
              for v in ("create", "update", "patch", "delete", "deletecollection")}
    assert aggregated_into("view", roles) == reads
    assert aggregated_into("edit", roles) == reads | writes
    assert aggregated_into("admin", roles) == reads | writes
    for doc in roles.values():
        assert doc["kind"] == "ClusterRole" and "aggregationRule" not in doc
        for rule in doc["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], rule
    bindings = [d for d in rendered_docs([]) if d["kind"] == "ClusterRoleBinding"
                and d["roleRef"]["name"] in roles]
    assert [(b["roleRef"]["name"], b["subjects"]) for b in bindings] == [
        ("kubeloop-computetemplates-view",
         [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
           "name": "system:authenticated"}])]


def test_the_roles_for_people_can_be_turned_off() -> None:
    assert user_roles(["--set", "userRoles.create=false"]) == {}
    docs = rendered_docs(["--set", "userRoles.computeTemplatesReadableByAll=false"])
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding"
                and d["roleRef"]["name"].endswith("-computetemplates-view")]
    assert user_roles(["--set", "userRoles.computeTemplatesReadableByAll=false"]) == \
        user_roles([])
