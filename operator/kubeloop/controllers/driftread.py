"""What a drift check reads: the reference profile (cached per monitor) and the live
counts of the target, from the model server pods' `/metrics`, an allowed URL, or
Prometheus. The operator reads only the addresses its administrator allowed.

While a ModelDeployment rolls out a new model (or runs a canary), pods of two models
serve side by side, each exporting its inputs on its own model's reference bins. The
monitor watches the current model (`status.activeModelUri`): its inputs are read from
its pods only; the other pods are read for their quality counters alone, which are kept
per model version (a label may reach any pod)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from kubeloop.api.driftmonitor import DriftMonitorSpec
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.controllers import servingpods
from kubeloop.controllers.common import Ctx
from kubeloop.controllers.driftverdict import Scrape
from kubeloop.controllers.k8sread import pod_ready
from kubeloop.controllers.servingpods import MD_POD, Endpoints
from kubeloop.drift import performance as perf
from kubeloop.drift import sources
from kubeloop.drift.profile import Profile
from kubeloop.drift.reference import (
    ReferenceInvalid,
    ReferenceNotServed,
    parse_profile,
    profile_from_server,
    profile_from_url,
    version_from_server,
)
from kubeloop.names import MODEL_URI_ANNOTATION, SERVER_PORT

SCRAPE_TIMEOUT = 5.0


def url_allowed(url: str, allowlist: list[str]) -> bool:
    return any(url.startswith(prefix) for prefix in allowlist if prefix)


def refused_url(spec: DriftMonitorSpec, allowlist: list[str]) -> str | None:
    """Why a URL the monitor names may not be read by the operator, or None. The
    operator reads only the addresses its administrator allowed (no SSRF through it)."""
    prom = spec.source.prometheus if spec.source.type == "prometheus" else None
    named = [
        ("source.prometheus.url", prom.url if prom else None),
        ("source.url", spec.source.url if prom is None else None),
        ("reference.url", spec.reference.url),
    ]
    for field_name, url in named:
        if url and not url_allowed(url, allowlist):
            return f"{field_name} {url} is not allowed by the operator's driftSourceAllowlist"
    return None


def scrape_metrics(endpoints: Endpoints, profile: Profile, model: str) -> Scrape:
    total = np.zeros((len(profile.features), profile.max_bins))
    errors = []
    quality = []
    served: set[str] = set()
    for url in endpoints.current:
        try:
            text = sources.fetch_metrics(url, timeout=SCRAPE_TIMEOUT, retries=1)
            counts = sources.parse_metrics(text, profile, model)
        except sources.SourceUnavailable as err:
            errors.append(str(err))
            continue
        total += counts
        quality.append(perf.parse_quality(text, model))
        served |= perf.served_versions(quality[-1])
    if endpoints.current and not quality:
        raise sources.SourceUnavailable("; ".join(errors) or "no endpoint to scrape")
    others = _other_models(endpoints.others, model)
    if not endpoints.current and not others:
        raise sources.SourceUnavailable("no pod of the model to scrape")
    return Scrape(
        total,
        cumulative=True,
        quality=perf.add([*quality, *others]),
        versions=frozenset(served),
        other_pods=len(others),
    )


def _other_models(urls: Sequence[str], model: str) -> list[perf.QualityCounts]:
    """The quality counters of pods of another model. Their inputs are on other bins and
    are not read; one that cannot be read (on its way out) is left out."""
    out = []
    for url in urls:
        try:
            text = sources.fetch_metrics(url, timeout=SCRAPE_TIMEOUT, retries=0)
            out.append(perf.parse_quality(text, model))
        except (sources.SourceUnavailable, sources.SourceInvalid):
            continue
    return out


def scrape_prometheus(
    url: str,
    query: str,
    profile: Profile,
    model: str,
    namespace: str,
    window: str,
    version: str | None,
) -> Scrape:
    """The window's counts from Prometheus: of the watched model's `version` only when
    the query names `{version}` (pods of another model, on other bins, left out)."""
    if version is None and sources.uses_version(query):
        raise sources.SourceUnavailable(
            "waiting for a ready pod of the watched model: the query counts its version "
            "({version}), read from its model server"
        )
    counts = sources.prometheus_counts(
        url,
        profile,
        model=model,
        namespace=namespace,
        window=window,
        version=version,
        bucket_query=query,
        timeout=SCRAPE_TIMEOUT,
    )
    return Scrape(counts, cumulative=False)


def chosen(spec: DriftMonitorSpec, profile: Profile) -> Profile:
    """The reference restricted to the monitor's `features` (all when none)."""
    if not spec.features:
        return profile
    try:
        return profile.select(spec.features)
    except ValueError as err:
        raise ReferenceInvalid(str(err)) from err


class References:
    """The reference profiles of each monitor (namespace, name), by source (a
    ConfigMap's version, the URL, the model URI); only the current source is kept, and
    a deleted monitor's go with it (forget)."""

    def __init__(self) -> None:
        self._profiles: dict[tuple[str, str], dict[str, Profile]] = {}
        # The watched model's version per monitor, with the model URI it was read for.
        self._versions: dict[tuple[str, str], tuple[str, str]] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._profiles.pop((namespace, name), None)
        self._versions.pop((namespace, name), None)

    def held(self, namespace: str, name: str) -> list[str]:
        held = [f"profile {k}" for k in self._profiles.get((namespace, name), {})]
        version = self._versions.get((namespace, name))
        return [*held, f"version of {version[0]}"] if version else held

    async def version(self, ctx: Ctx, body: dict[str, Any], target: dict[str, Any]) -> str | None:
        """The version the watched model's pods serve (`status.activeModelUri`), read
        from one of them once per model URI; None while none is ready to say."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        uri = (target.get("status") or {}).get("activeModelUri")
        if not uri:
            return None
        cached = self._versions.get(key)
        if cached is not None and cached[0] == uri:
            return cached[1]
        try:
            base = self._server_of(ctx, key[0], target, uri)
            version = await asyncio.to_thread(version_from_server, base, target["metadata"]["name"])
        except ReferenceInvalid:  # ReferenceNotServed too: asked again at the next check
            return None
        self._versions[key] = (uri, version)
        return version

    async def reference(
        self, ctx: Ctx, spec: DriftMonitorSpec, body: dict[str, Any], target: dict[str, Any]
    ) -> Profile:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        cache = self._profiles.setdefault((namespace, name), {})
        ref = spec.reference
        if ref.config_map is not None:
            cm = await ctx.kube.get("v1", "ConfigMap", namespace, ref.config_map.name)
            if cm is None:
                raise ReferenceNotServed(
                    f"waiting for ConfigMap {namespace}/{ref.config_map.name} with the "
                    "reference profile"
                )
            key = ref.config_map.key
            # Parsed once per version of the ConfigMap, not at every check.
            version = (
                f"configmap/{ref.config_map.name}/{key}@{cm['metadata'].get('resourceVersion')}"
            )
            cached = cache.get(version)
            if cached is not None:
                profile = cached
            else:
                text = (cm.get("data") or {}).get(key)
                if text is None:
                    raise ReferenceInvalid(
                        f"ConfigMap {namespace}/{ref.config_map.name} has no key {key!r}"
                    )
                profile = parse_profile(text, f"ConfigMap {ref.config_map.name} key {key}")
                cache.clear()
                cache[version] = profile
        elif ref.url is not None:
            # Read again at every check (the profile may change with the model); while
            # the server cannot answer, the last profile it gave stands.
            try:
                profile = await asyncio.to_thread(profile_from_url, ref.url)
            except ReferenceNotServed:
                if ref.url not in cache:
                    raise
                profile = cache[ref.url]
            cache.clear()
            cache[ref.url] = profile
        else:
            uri = (target.get("status") or {}).get("activeModelUri")
            if not uri:
                raise ReferenceNotServed(
                    f"waiting for ModelDeployment {target['metadata']['name']} to have an "
                    "active model: the reference profile is read from its serving pods"
                )
            if uri not in cache:
                base = self._server_of(ctx, namespace, target, uri)
                fetched = await asyncio.to_thread(
                    profile_from_server, base, target["metadata"]["name"]
                )
                cache.clear()
                cache[uri] = fetched
            profile = cache[uri]
        return profile

    @staticmethod
    def _server_of(ctx: Ctx, namespace: str, target: dict[str, Any], uri: str) -> str:
        """A ready pod of the target that serves `uri`: only pods can read a claim."""
        md_spec = ModelDeploymentSpec.model_validate(target.get("spec") or {})
        port = md_spec.runtime.port if md_spec.runtime else SERVER_PORT
        for pod in ctx.store.owned(MD_POD, namespace, target["metadata"]["name"]):
            meta, pod_status = pod["metadata"], pod.get("status") or {}
            ready = pod_ready(pod)
            serves = (meta.get("annotations") or {}).get(MODEL_URI_ANNOTATION) == uri
            if ready and serves and pod_status.get("podIP") and not meta.get("deletionTimestamp"):
                return f"http://{pod_status['podIP']}:{port}"
        raise ReferenceNotServed(
            f"waiting for a ready pod of ModelDeployment {target['metadata']['name']} that "
            f"serves {uri}: its reference profile is read from the model server"
        )

    endpoints = staticmethod(servingpods.endpoints)
