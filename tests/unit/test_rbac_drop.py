"""Taking one verb out of RBAC rules (tests/rbac.py, for hack/rbac_necessity.py): that
verb, on that resource of that group, goes; everything else the rules granted stays."""

from __future__ import annotations

from typing import Any

import pytest

from tests.rbac import apply_drop, dropped, without


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
