"""The chart's RBAC as an identity for the operator under test, with one write verb
taken away on demand.

`KUBELOOP_RBAC_DROP=group/resource/verb` (the core group is empty: `/services/patch`)
removes that one verb from the chart's rules before anything can use it, so that
`hack/rbac_necessity.py` can show that the test named for a rule fails without it:

- the integration bed applies the chart's RBAC without the verb (`chart_identity`);
- every `helm install` and `helm upgrade` of the e2e bed renders the chart through a
  Helm 4 post-renderer plugin that takes the verb out (`helm_drop`), so no release,
  and no upgrade of one, ever grants it;
- and before an operator starts, `wait_refused` waits until the API server's own
  authorizer refuses the ServiceAccount that verb (a SubjectAccessReview, as
  `kubectl auth can-i` asks it).

While a verb is dropped, the harness's own refusal checks (`refused`) fail nothing: they
record what the API server refused in $KUBELOOP_RBAC_REFUSALS, and the verdict is the
test's own assertions on the product's behaviour.
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubetest import ROOT, Cluster, tool

CHART = ROOT / "charts" / "kubeloop"
DROP_ENV = "KUBELOOP_RBAC_DROP"
REFUSALS_ENV = "KUBELOOP_RBAC_REFUSALS"
PLUGIN = "kubeloop-rbac-drop"
Rule = tuple[str, str, str]


def parse_rule(value: str) -> Rule:
    """`group/resource/verb` (the core group empty, a subresource with its own slash:
    `kubeloop.io/trainingjobs/status/patch`) as a (group, resource, verb)."""
    parts = value.split("/")
    if len(parts) < 3 or not all(parts[1:]):
        raise ValueError(f"{DROP_ENV}={value!r}: expected group/resource/verb")
    return parts[0], "/".join(parts[1:-1]), parts[-1]


def dropped() -> Rule | None:
    """The (group, resource, verb) that $KUBELOOP_RBAC_DROP names, if any."""
    value = os.environ.get(DROP_ENV, "").strip()
    return parse_rule(value) if value else None


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


AGGREGATE_LABEL = "rbac.authorization.k8s.io/aggregate-to-"


def operators_role(doc: dict[str, Any]) -> bool:
    """A Role or ClusterRole that grants the operator something: not one of the chart's
    roles for people (templates/user-roles.yaml), which Kubernetes aggregates into the
    built-in admin, edit and view roles by their `aggregate-to-*` labels and which no
    binding of the chart gives the operator."""
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return doc.get("kind") in ("Role", "ClusterRole") and not any(
        key.startswith(AGGREGATE_LABEL) for key in labels)


def apply_drop(docs: list[dict[str, Any]], drop: Rule | None) -> bool:
    """Take `drop` out of every Role and ClusterRole of the operator in `docs`; True when
    one had it."""
    if drop is None:
        return False
    found = False
    for doc in docs:
        if operators_role(doc):
            rules = doc.get("rules") or []
            kept = without(rules, drop)
            found = found or kept != rules
            doc["rules"] = kept
    return found


# A line of three dashes (and nothing else but blanks) starts a YAML document.
_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)


def post_render(manifests: str, drop: Rule) -> str:
    """Helm's rendered manifests with `drop` taken out of every Role and ClusterRole of
    the operator; every other document passes through as it came, byte for byte."""
    out = []
    for chunk in _SEPARATOR.split(manifests):
        doc = yaml.safe_load(chunk) if chunk.strip() else None
        if isinstance(doc, dict) and operators_role(doc):
            apply_drop([doc], drop)
            lines = chunk.splitlines(keepends=True)
            # Helm's "# Source: chart/templates/x.yaml" line stays with its document.
            head = "".join(line for line in lines[:next(
                (i for i, line in enumerate(lines) if line.strip() and
                 not line.lstrip().startswith("#")), len(lines))])
            chunk = (head if head.startswith("\n") else "\n" + head) + \
                yaml.safe_dump(doc, sort_keys=False)
        out.append(chunk)
    return "---".join(out)


def post_render_main(argv: list[str]) -> int:
    """The post-renderer plugin's command: manifests on stdin, the rule as its argument."""
    if len(argv) != 1:
        print(f"{PLUGIN}: expected one argument, group/resource/verb", file=sys.stderr)
        return 2
    sys.stdout.write(post_render(sys.stdin.read(), parse_rule(argv[0])))
    return 0


@functools.cache
def _plugin_dir() -> Path:
    """A $HELM_PLUGINS folder holding only the post-renderer plugin (made once a run)."""
    plugins = Path(tempfile.mkdtemp(prefix="kubeloop-helm-plugins-"))
    atexit.register(shutil.rmtree, plugins, True)
    here = plugins / PLUGIN
    here.mkdir()
    (here / "plugin.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "type": "postrenderer/v1", "name": PLUGIN, "version": "0.1.0",
        "runtime": "subprocess",
        "runtimeConfig": {"platformCommand": [{"command": str(here / "render")}]},
    }, sort_keys=False))
    script = here / "render"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.rbac import post_render_main\n"
        "sys.exit(post_render_main(sys.argv[1:]))\n")
    script.chmod(0o755)
    return plugins


def helm_drop(args: tuple[str, ...] | list[str]) -> tuple[list[str], dict[str, str]]:
    """The extra flags and environment for a helm command so that an install or upgrade
    never grants $KUBELOOP_RBAC_DROP (Helm 4 takes a post-renderer only as a plugin);
    nothing for other commands, or when no verb is dropped."""
    drop = dropped()
    if drop is None or not args or args[0] not in ("install", "upgrade"):
        return [], {}
    return (["--post-renderer", PLUGIN, "--post-renderer-args", "/".join(drop)],
            {"HELM_PLUGINS": str(_plugin_dir())})


def can_i_args(drop: Rule) -> list[str]:
    """`kubectl auth can-i` arguments asking for exactly this verb on this resource."""
    group, resource, verb = drop
    name, _, sub = resource.partition("/")
    return [verb, f"{name}.{group}" if group else name,
            *([f"--subresource={sub}"] if sub else [])]


def wait_refused(cluster: Cluster, namespace: str, account: str,
                 where: tuple[str, ...] = (), timeout: float = 30.0) -> None:
    """With $KUBELOOP_RBAC_DROP set: wait until the API server's authorizer refuses the
    ServiceAccount that verb, cluster-wide and in each namespace of `where`, before
    anything runs as it. A harness error (never a verdict) when it does not."""
    drop = dropped()
    if drop is None:
        return
    user = f"system:serviceaccount:{namespace}:{account}"
    scopes = [["--all-namespaces"], *(["-n", ns] for ns in where)]
    deadline = time.monotonic() + timeout
    while True:
        answers = [cluster.kubectl("auth", "can-i", *can_i_args(drop), *scope, "--as", user,
                                   check=False).stdout.strip() for scope in scopes]
        if all(a == "no" for a in answers):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{DROP_ENV}: {user} may still {drop} ({answers})")
        time.sleep(0.5)


def refused(lines: list[str], what: str = "the operator was refused") -> None:
    """The harness's refusal check: any refusal fails the test, as the chart's RBAC
    must grant whatever the operator does. While a verb is dropped it fails nothing (a
    rule is needed only when its test fails on the product's behaviour) and appends
    the refusals to $KUBELOOP_RBAC_REFUSALS as evidence for hack/rbac_necessity.py."""
    if not lines:
        return
    if dropped() is None:
        pytest.fail(what + ":\n" + "\n".join(lines[:20]), pytrace=False)
    path = os.environ.get(REFUSALS_ENV)
    if path:
        with open(path, "a") as out:
            out.writelines(line.rstrip("\n") + "\n" for line in lines)


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
    installed under their own release name; a kubeconfig for that ServiceAccount, once
    the API server refuses it the dropped verb."""
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
    wait_refused(cluster, namespace, account)
    return token_kubeconfig(cluster, namespace, account, path)


def release_refused(cluster: Cluster, release: str, namespace: str, account: str,
                    where: tuple[str, ...] = ()) -> None:
    """With $KUBELOOP_RBAC_DROP set, after a `helm install` or `upgrade` (which
    `helm_drop` renders without it): no Role or ClusterRole of the release's operator
    grants it, and the API server refuses it to the release's ServiceAccount
    (`wait_refused`)."""
    if dropped() is None:
        return
    listed = yaml.safe_load(cluster.kubectl(
        "get", "clusterroles,roles", "-A", "-l", f"app.kubernetes.io/instance={release}",
        "-o", "yaml").stdout)
    if apply_drop(listed.get("items") or [], dropped()):
        raise RuntimeError(f"{DROP_ENV}: release {release} still grants {dropped()}")
    wait_refused(cluster, namespace, account, where)
