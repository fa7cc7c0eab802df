"""The chart's RBAC as an identity for the operator under test, with one write verb
taken away on demand.

`KUBELOOP_RBAC_DROP=group/resource/verb` (the core group is empty: `/services/patch`)
removes that one verb from the rules the test bed installs or the chart installed, so
that `hack/rbac_necessity.py` can show that the test named for a rule fails without it.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.kubetest import ROOT, Cluster, tool

CHART = ROOT / "charts" / "kubeloop"
DROP_ENV = "KUBELOOP_RBAC_DROP"
Rule = tuple[str, str, str]


def dropped() -> Rule | None:
    """The (group, resource, verb) that $KUBELOOP_RBAC_DROP names, if any."""
    value = os.environ.get(DROP_ENV, "").strip()
    if not value:
        return None
    # A subresource has a slash of its own: kubeloop.io/trainingjobs/status/patch.
    parts = value.split("/")
    if len(parts) < 3 or not all(parts[1:]):
        raise ValueError(f"{DROP_ENV}={value!r}: expected group/resource/verb")
    return parts[0], "/".join(parts[1:-1]), parts[-1]


def without(rules: list[dict[str, Any]], drop: Rule) -> list[dict[str, Any]]:
    """The rules with `drop` taken out and everything else they grant kept: a rule that
    names it is split into the rest of the rule and the same resource without the verb."""
    group, resource, verb = drop
    out: list[dict[str, Any]] = []
    for rule in rules:
        groups, resources = rule.get("apiGroups") or [], rule.get("resources") or []
        if group not in groups or resource not in resources or verb not in rule.get("verbs", []):
            out.append(rule)
            continue
        rest = copy.deepcopy(rule)
        rest["resources"] = [r for r in resources if r != resource]
        if rest["resources"]:
            out.append(rest)
        others = [g for g in groups if g != group]
        if others:
            out.append({**copy.deepcopy(rule), "apiGroups": others, "resources": [resource]})
        verbs = [v for v in rule["verbs"] if v != verb]
        if verbs:
            out.append({**copy.deepcopy(rule), "apiGroups": [group], "resources": [resource],
                        "verbs": verbs})
    return out


def apply_drop(docs: list[dict[str, Any]], drop: Rule | None) -> bool:
    """Take `drop` out of every Role and ClusterRole in `docs`; True when one had it."""
    if drop is None:
        return False
    found = False
    for doc in docs:
        if doc.get("kind") in ("Role", "ClusterRole"):
            rules = doc.get("rules") or []
            kept = without(rules, drop)
            found = found or kept != rules
            doc["rules"] = kept
    return found


def token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount, with a fresh token."""
    token = cluster.kubectl("create", "token", account, "-n", namespace,
                            "--duration=2h").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": server["cluster"]}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
        "current-context": "c",
    }))
    return path


def chart_identity(cluster: Cluster, release: str, namespace: str, path: Path) -> Path:
    """The chart's ServiceAccount and RBAC (default values, less $KUBELOOP_RBAC_DROP)
    installed under their own release name; a kubeconfig for that ServiceAccount."""
    rendered = subprocess.run(
        [tool("helm"), "template", release, str(CHART), "-n", namespace,
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
        capture_output=True, text=True, check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    drop = dropped()
    if drop is not None and not apply_drop(docs, drop):
        raise AssertionError(f"{DROP_ENV}: the chart grants no {drop}")
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    return token_kubeconfig(cluster, namespace, account, path)


def drop_from_release(cluster: Cluster, release: str) -> None:
    """Take $KUBELOOP_RBAC_DROP out of the Roles and ClusterRoles a Helm release made."""
    drop = dropped()
    if drop is None:
        return
    listed = yaml.safe_load(cluster.kubectl(
        "get", "clusterroles,roles", "-A", "-l", f"app.kubernetes.io/instance={release}",
        "--show-managed-fields",
        "-o", "yaml").stdout)
    docs = listed.get("items") or []
    if not apply_drop(docs, drop):
        raise AssertionError(f"{DROP_ENV}: release {release} grants no {drop}")
    for doc in docs:
        # Written as Helm's own field manager (Helm 4 applies server-side), so that the
        # next `helm upgrade` owns the rules again instead of meeting a conflict.
        appliers = [f["manager"] for f in doc["metadata"].get("managedFields") or []
                    if f.get("operation") == "Apply"]
        doc["metadata"] = {k: v for k, v in doc["metadata"].items()
                           if k in ("name", "namespace", "labels", "annotations")}
        body = yaml.safe_dump(doc)
        if appliers:
            cluster.kubectl("apply", "--server-side", "--force-conflicts",
                            f"--field-manager={appliers[0]}", "-f", "-", input=body)
        else:
            cluster.kubectl("replace", "-f", "-", input=body)
