"""Taking one verb out of RBAC rules (tests/rbac.py, for hack/rbac_necessity.py): that
verb, on that resource of that group, goes; everything else the rules granted stays;
every helm install and upgrade renders the chart without it; the harness's refusal
checks only record while it is gone; and a rule counts as needed only when its test's
own assertion fails."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubetest import ROOT, tool
from tests.rbac import (
    CHART,
    DROP_ENV,
    REFUSALS_ENV,
    apply_drop,
    can_i_args,
    dropped,
    helm_drop,
    operators_role,
    post_render,
    refused,
    without,
)


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups") or []
            for r in rule.get("resources") or [] for v in rule.get("verbs") or []}


RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["kubeloop.io", "x.io"], "resources": ["a/status", "b/status"],
     "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


@pytest.mark.parametrize("drop", sorted(grants(RULES)))
def test_exactly_the_one_grant_goes(drop: tuple[str, str, str]) -> None:
    kept = without(RULES, drop)
    assert grants(kept) == grants(RULES) - {drop}
    assert all(rule.get("resources") and rule.get("verbs") for rule in kept)


def test_roles_are_changed_and_other_kinds_left_alone() -> None:
    docs: list[dict[str, Any]] = [
        {"kind": "ClusterRole", "rules": [dict(r) for r in RULES]},
        {"kind": "ServiceAccount", "metadata": {"name": "sa"}},
    ]
    assert apply_drop(docs, ("", "events", "create"))
    assert ("", "events", "create") not in grants(docs[0]["rules"])
    assert docs[1] == {"kind": "ServiceAccount", "metadata": {"name": "sa"}}
    assert not apply_drop(docs, ("", "secrets", "get"))  # nothing granted it


def test_the_environment_names_the_grant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOOP_RBAC_DROP", "/services/patch")
    assert dropped() == ("", "services", "patch")
    monkeypatch.setenv("KUBELOOP_RBAC_DROP", "kubeloop.io/trainingjobs/status/patch")
    assert dropped() == ("kubeloop.io", "trainingjobs/status", "patch")
    monkeypatch.setenv("KUBELOOP_RBAC_DROP", "services")
    with pytest.raises(ValueError, match="group/resource/verb"):
        dropped()
    monkeypatch.delenv("KUBELOOP_RBAC_DROP")
    assert dropped() is None


# Helm's output: documents after `---` lines, each with its "# Source:" comment.
RENDERED = """---
# Source: kubeloop/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: x   # kept as written
---
# Source: kubeloop/templates/rbac.yaml
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: x}
rules:
- {apiGroups: [""], resources: [events], verbs: [create]}
- {apiGroups: [kubeloop.io], resources: [a/status], verbs: [get, patch]}
"""


def test_the_post_renderer_takes_the_grant_out_and_leaves_the_rest_as_written() -> None:
    out = post_render(RENDERED, ("kubeloop.io", "a/status", "patch"))
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert grants(docs[1]["rules"]) == {("", "events", "create"),
                                        ("kubeloop.io", "a/status", "get")}
    assert out.split("---")[1] == RENDERED.split("---")[1]  # byte for byte
    assert "# Source: kubeloop/templates/rbac.yaml" in out.split("---")[2]
    assert post_render(RENDERED, ("", "secrets", "get")).count("events") == 1


def test_every_helm_install_and_upgrade_renders_the_chart_without_the_grant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Helm 4 post-renderer plugin, run by the real helm: what the chart would
    install lacks exactly the dropped verb (the ClusterRole's), everything else is as
    helm renders it without the plugin."""
    def render(flags: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
        out = subprocess.run([tool("helm"), "template", "x", str(CHART), *flags],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, **env}).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    monkeypatch.delenv(DROP_ENV, raising=False)
    assert helm_drop(["upgrade", "x", "chart"]) == ([], {})
    plain = render([], {})
    monkeypatch.setenv(DROP_ENV, "/events/create")
    assert helm_drop(["template", "x", "chart"]) == ([], {})
    assert helm_drop(["uninstall", "x"]) == ([], {})
    for command in ("install", "upgrade"):
        flags, env = helm_drop([command, "x", "chart"])
        dropped_out = render(flags, env)
        roles = [d for d in plain if d["kind"] in ("Role", "ClusterRole")]
        assert any(("", "events", "create") in grants(r["rules"]) for r in roles)
        for before, after in zip(plain, dropped_out, strict=True):
            if before["kind"] in ("Role", "ClusterRole"):
                assert grants(after["rules"]) == grants(before["rules"]) - {
                    ("", "events", "create")}
            else:
                assert after == before


def test_the_roles_for_people_are_not_the_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    """The aggregated roles for people (templates/user-roles.yaml) grant users what the
    operator may not have: the necessity check neither counts nor drops them, so a
    user's `edit` keeps creating TrainingJobs while the operator's create is away."""
    monkeypatch.setenv(DROP_ENV, "kubeloop.io/trainingjobs/create")
    flags, env = helm_drop(["install", "x", "chart"])
    out = subprocess.run([tool("helm"), "template", "x", str(CHART), *flags],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    create = ("kubeloop.io", "trainingjobs", "create")
    assert create in grants(roles["x-kubeloop-edit"]["rules"])
    assert not any(create in grants(r["rules"]) for r in roles.values() if operators_role(r))
    assert not apply_drop([roles["x-kubeloop-edit"]], create)
    writes = necessity().rendered_writes()
    assert ("kubeloop.io", "driftmonitors", "create") not in writes
    assert create in writes  # the operator's own: a DriftMonitor's retrain


def test_can_i_asks_for_the_verb_on_the_resource_of_the_group() -> None:
    assert can_i_args(("", "events", "create")) == ["create", "events"]
    assert can_i_args(("kubeloop.io", "computetemplates/status", "patch")) == [
        "patch", "computetemplates.kubeloop.io", "--subresource=status"]


def test_a_refusal_fails_the_test_unless_a_verb_is_dropped_then_it_is_recorded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(DROP_ENV, raising=False)
    refused([])  # nothing refused: nothing to say
    with pytest.raises(pytest.fail.Exception, match="the operator was refused"):
        refused(['cannot create resource "events" in API group ""'])
    monkeypatch.setenv(DROP_ENV, "/events/create")
    monkeypatch.setenv(REFUSALS_ENV, str(tmp_path / "refusals"))
    refused(["one", "two\n"])
    refused(["three"])
    assert (tmp_path / "refusals").read_text() == "one\ntwo\nthree\n"


def necessity() -> Any:
    spec = importlib.util.spec_from_file_location("rbac_necessity",
                                                  ROOT / "hack" / "rbac_necessity.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TESTS = '''
import pytest

@pytest.fixture
def refusal_check():
    yield
    raise AssertionError("the operator was refused")

def test_product():
    assert {"phase": "Pending"} == {"phase": "Succeeded"}, "no status written"

def test_harness_only(refusal_check):
    pass

def test_passes():
    pass
'''


@pytest.mark.parametrize(("name", "outcome"), [
    ("test_product", "needed"),
    ("test_harness_only", "NOT SHOWN: only the harness failed (a fixture's error)"),
    ("test_passes", "NOT SHOWN: the test passed"),
    ("test_no_such_test", "NOT SHOWN: 0 tests ran, not the one named"),
])
def test_a_rule_is_needed_only_when_the_tests_own_assertion_fails(
    tmp_path: Path, name: str, outcome: str
) -> None:
    """Read off pytest's own junit report: a failure in the test's body counts, an
    error in a fixture (the harness's refusal check at teardown) does not."""
    module = necessity()
    (tmp_path / "test_x.py").write_text(TESTS)
    xml = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", f"test_x.py::{name}", "-q",
                    "-p", "no:cacheprovider", f"--junitxml={xml}"],
                   cwd=tmp_path, capture_output=True, check=False)
    cases, failures, errors = module.junit_outcome(xml)
    assert module.verdict(failures, errors, cases, True) == outcome
    if outcome == "needed":
        assert "no status written" in failures[0]
        assert module.verdict(failures, errors, cases, False).startswith("NOT SHOWN")


def test_only_the_refusal_of_the_dropped_verb_counts() -> None:
    module = necessity()
    log = "\n".join([
        '403 Forbidden: cannot create resource "events" in API group "" in the namespace t',
        '{"message": "cannot patch resource \\"computetemplates/status\\" in API group '
        '\\"kubeloop.io\\""}',
        'cannot create resource "services" in API group ""',
    ])
    assert len(module.refusals_of(("", "events", "create"), log)) == 1
    assert len(module.refusals_of(("kubeloop.io", "computetemplates/status", "patch"), log)) == 1
    assert module.refusals_of(("", "services", "patch"), log) == []
