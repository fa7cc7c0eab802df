"""Every address a user reads leads somewhere real, or is plainly a placeholder.

Kubeloop has no public repository, website, Helm repository or published image: the
chart's default image name is a local name only (docs/install.md). So the README, the
docs, the chart (with its NOTES) and the examples may link only to hosts on the
allowlist below, and nothing may send a user to a Kubeloop repository or registry that
does not exist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubeloop"

# Public hosts that exist and are linked on purpose.
PUBLIC_HOSTS = {
    "kopf.readthedocs.io",  # README: the framework the operator is written with
    "json-schema.org",  # values.schema.json's $schema
    "kubernetes.io",
    "helm.sh",
    "pypi.org",
    "docs.python.org",
    "prometheus.io",
    "argo-cd.readthedocs.io",
    "fluxcd.io",
    "kueue.sigs.k8s.io",
}
# github.com only under organisations that exist and that the docs may mean.
GITHUB_ORGS = {
    "kubernetes",
    "kubernetes-sigs",
    "kubeflow",
    "fluxcd",
    "argoproj",
    "nolar",  # Kopf
    "google",  # go-containerregistry (crane)
    "containers",  # skopeo
    "opencontainers",
}
# Single addresses that are placeholders in an example, not links. Keep this short.
PLACEHOLDER_URLS = {
    # docs/gitops/README.md: the Git repository of a sample Argo CD Application.
    "https://github.com/acme/ml-gitops.git",
}
# Domains reserved for examples and documentation (RFC 2606, RFC 6761; ICANN reserved
# .internal for private use): a host under one of these can never be a real link.
PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net")
PLACEHOLDER_TLDS = (".example", ".test", ".invalid", ".localhost", ".internal")
# In-cluster Service names: `prometheus:9090`, `web.ml.svc`, `x.y.svc.cluster.local`.
IN_CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local", ".cluster.local")
LOOPBACK = {"localhost", "127.0.0.1", "::1"}

# Addresses of a Kubeloop project that does not exist anywhere: never in any file.
FORBIDDEN = (
    "raw.githubusercontent.com/kubeloop",
    "github.com/kubeloop",
    "kubeloop.github.io",
    "docker://ghcr.io/kubeloop",  # pulling the local default name as if published
    "oci://ghcr.io/kubeloop",  # a Helm chart in an OCI registry
    "pull ghcr.io/kubeloop",  # docker/podman/crane pull
    "helm repo add kubeloop",
)

URL = re.compile(r"https?://[^\s\"'<>()\[\]{}`|\\]+")
SKIP_DIRS = {".git", ".venv", ".cluster", "build", "dist", "node_modules", "__pycache__",
             ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary or unreadable: no links a user reads


def user_facing_files() -> list[Path]:
    files = [ROOT / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    files += sorted(p for p in CHART.rglob("*") if p.is_file())
    files += sorted((ROOT / "examples").rglob("*.yaml"))
    return [p for p in files if _text(p) is not None]


def urls() -> list[tuple[str, int, str]]:
    found = []
    for path in user_facing_files():
        text = _text(path) or ""
        for lineno, line in enumerate(text.splitlines(), 1):
            for match in URL.finditer(line):
                url = match.group(0).rstrip(".,;:!?*_")
                found.append((str(path.relative_to(ROOT)), lineno, url))
    return found


def allowed(url: str) -> bool:
    if url in PLACEHOLDER_URLS:
        return True
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return False
    if host in LOOPBACK or host in PUBLIC_HOSTS:
        return True
    if host == "github.com":
        org = parts.path.strip("/").split("/")[0].lower()
        return org in GITHUB_ORGS
    if any(host == d or host.endswith("." + d) for d in PLACEHOLDER_DOMAINS):
        return True
    if host.endswith(PLACEHOLDER_TLDS):
        return True
    return "." not in host or host.endswith(IN_CLUSTER_SUFFIXES)


def test_the_scan_finds_files_and_urls() -> None:
    files = {str(p.relative_to(ROOT)) for p in user_facing_files()}
    assert "README.md" in files
    assert "charts/kubeloop/templates/NOTES.txt" in files
    assert any(f.startswith("docs/") for f in files)
    assert any(f.startswith("examples/") for f in files)
    found = urls()
    assert len(found) > 0, "no URL found: the scan would pass vacuously"
    assert any(url.startswith("https://kopf.readthedocs.io") for _, _, url in found)


def test_every_url_is_on_the_allowlist() -> None:
    bad = [f"{path}:{line}: {url}" for path, line, url in urls() if not allowed(url)]
    assert not bad, (
        "addresses to a host that does not exist or is not meant (Kubeloop publishes no "
        "repository, site or image; use examples/ of the checkout, or a placeholder under "
        "example.com):\n" + "\n".join(bad)
    )


def repository_files() -> list[Path]:
    """Every file of the checkout, less caches, build output and virtual environments."""
    found = []
    for top, dirs, names in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        found += [Path(top) / name for name in sorted(names)]
    return found


def test_no_file_points_at_a_kubeloop_repository_or_registry() -> None:
    this = Path(__file__).resolve()
    bad = []
    scanned = 0
    for path in repository_files():
        if (path == this or not path.is_file() or path.suffix in {".tar", ".gz", ".whl"}
                or path.stat().st_size > 2_000_000):
            continue
        text = _text(path)
        if text is None:
            continue
        scanned += 1
        lowered = text.lower()
        for needle in FORBIDDEN:
            if needle in lowered:
                line = lowered[: lowered.index(needle)].count("\n") + 1
                bad.append(f"{path.relative_to(ROOT)}:{line}: {needle}")
    assert scanned > 50
    assert not bad, "addresses of a Kubeloop project that does not exist:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "url",
    [
        "https://raw.githubusercontent.com/kubeloop/kubeloop/main/examples/trainingjob-cpu.yaml",
        "https://github.com/kubeloop/kubeloop",
        "https://kubeloop.io/docs",
        "https://ghcr.io/kubeloop/kubeloop",
        "https://github.com/someone/else",
    ],
)
def test_the_allowlist_rejects_made_up_addresses(url: str) -> None:
    assert not allowed(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://prometheus:9090/api/v1/query",
        "http://web.ml.svc:8080/metrics",
        "https://kubernetes.default.svc",
        "https://models.example.internal/iris/v1",
        "https://registry.example.com/ml/kubeloop",
        "https://github.com/kubernetes-sigs/kueue",
    ],
)
def test_the_allowlist_accepts_in_cluster_names_and_placeholders(url: str) -> None:
    assert allowed(url)


UNINSTALL_CRDS = "kubectl delete crd -l app.kubernetes.io/part-of=kubeloop"


def test_the_uninstall_selector_matches_every_crd_the_chart_installs() -> None:
    crds = [doc for path in sorted((CHART / "crds").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    names = {crd["metadata"]["name"] for crd in crds}
    assert {"trainingjobs.kubeloop.io", "modeldeployments.kubeloop.io",
            "driftmonitors.kubeloop.io", "clusterkopfpeerings.kopf.dev",
            "kopfpeerings.kopf.dev"} <= names
    unlabelled = [crd["metadata"]["name"] for crd in crds
                  if crd["metadata"].get("labels", {}).get("app.kubernetes.io/part-of")
                  != "kubeloop"]
    assert not unlabelled, f"`{UNINSTALL_CRDS}` would leave {unlabelled} behind"
    for doc in (CHART / "templates" / "NOTES.txt", ROOT / "docs" / "install.md"):
        text = doc.read_text()
        assert UNINSTALL_CRDS in text, doc
        assert "helm uninstall" in text and "kubectl delete namespace" in text, doc


def test_documented_set_flags_name_real_values() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = [CHART / "templates" / "NOTES.txt", ROOT / "docs" / "install.md",
            ROOT / "docs" / "operations.md"]
    keys = {key for doc in docs for key in re.findall(r"--set ([A-Za-z][\w.]*)=", doc.read_text())}
    assert {"image.repository", "image.tag"} <= keys
    for key in keys:
        node = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"--set {key}: not in values.yaml"
            node = node[part]
