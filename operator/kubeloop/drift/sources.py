"""Live feature histograms: the model server's ``/metrics`` text or the Prometheus API.

The model server exports, on the reference profile's bins,

* numeric features as the histogram ``kubeloop_model_feature`` with labels ``model``,
  ``version``, ``feature`` and cumulative ``le`` buckets on the profile's edges plus
  ``+Inf``;
* categorical features as the counter ``kubeloop_model_feature_category_total`` with
  labels ``model``, ``version``, ``feature``, ``category``.

``version`` is the served model's version: during a rollout pods of two models serve
side by side, each on its own reference's bins, and a Prometheus query must keep them
apart (``{version}`` in a query template).

Everything here returns per-bin (non-cumulative) counts shaped like
``Profile.reference_counts()``, ready for ``kubeloop.drift.stats``. Failures map to two
exceptions so that a controller can tell "try again later" from "fix the config":
:class:`SourceUnavailable` (network, timeout, 5xx) and :class:`SourceInvalid` (malformed,
too large, unexpected shape, buckets that do not match the profile).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import requests
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from kubeloop.drift.profile import OTHER_CATEGORY, FeatureProfile, Profile

BUCKET_SAMPLE = "kubeloop_model_feature_bucket"
CATEGORY_SAMPLE = "kubeloop_model_feature_category_total"

# Exported edges go through a float -> text -> float round trip; Python and Go print the
# shortest text that round-trips exactly, but an exporter that formats with fewer digits
# (or float32 edges) should still match. Edges closer than this are rejected anyway.
EDGE_RTOL = 1e-6
EDGE_ATOL = 1e-12

# Prometheus sums buckets of several series; rounding can leave a cumulative count a hair
# below the previous bucket. Anything larger is a broken histogram.
CUMULATIVE_SLACK = 1e-6

# One query per feature; these placeholders are substituted, PromQL's own braces are left
# alone. {window} is the range over which increase() counts (the monitor's interval);
# {version} is the version of the model the monitor watches.
PLACEHOLDERS = ("feature", "model", "namespace", "window", "version")
DEFAULT_BUCKET_QUERY = (
    "sum by (le) (increase(kubeloop_model_feature_bucket"
    '{namespace="{namespace}", model="{model}", version="{version}", feature="{feature}"}'
    "[{window}]))"
)
DEFAULT_CATEGORY_QUERY = (
    "sum by (category) (increase(kubeloop_model_feature_category_total"
    '{namespace="{namespace}", model="{model}", version="{version}", feature="{feature}"}'
    "[{window}]))"
)
# The same, for a version that is not known: every pod of the model summed.
ANY_VERSION_CATEGORY_QUERY = DEFAULT_CATEGORY_QUERY.replace(' version="{version}",', "")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 8 * 2**20
_READ_CHUNK = 64 * 1024


class SourceUnavailable(Exception):
    """The source could not be reached in time; worth retrying later."""


class SourceInvalid(Exception):
    """The source answered with something unusable; retrying will not help."""


@dataclass(frozen=True)
class Series:
    """One element of a Prometheus instant vector."""

    labels: dict[str, str]
    value: float


# --- matching series onto the profile's bins ---------------------------------------


def _edge_index(feature: FeatureProfile, edges: np.ndarray, le: str) -> int:
    try:
        bound = float(le)
    except ValueError:
        raise SourceInvalid(f"feature {feature.name!r}: bucket le={le!r} is not a number") from None
    if bound == math.inf:
        return edges.size
    nearest = int(np.argmin(np.abs(edges - bound))) if edges.size else -1
    if nearest < 0 or not math.isclose(edges[nearest], bound, rel_tol=EDGE_RTOL, abs_tol=EDGE_ATOL):
        raise SourceInvalid(
            f"feature {feature.name!r}: bucket le={le} is not one of the profile's edges"
        )
    return nearest


def _numeric_row(feature: FeatureProfile, buckets: dict[str, float]) -> np.ndarray:
    """Per-bin counts from cumulative ``le`` buckets; all of the profile's must be there."""
    edges = np.asarray(feature.edges, dtype=np.float64)
    cumulative = np.full(feature.bins, np.nan)
    for le, value in buckets.items():
        index = _edge_index(feature, edges, le)
        if not np.isnan(cumulative[index]):
            raise SourceInvalid(f"feature {feature.name!r}: two buckets for le={le}")
        cumulative[index] = value
    missing = [
        label for label, v in zip(feature.bin_labels(), cumulative, strict=True) if np.isnan(v)
    ]
    if missing:
        raise SourceInvalid(f"feature {feature.name!r}: buckets missing for le={missing}")
    counts = np.diff(cumulative, prepend=0.0)
    if (counts < -CUMULATIVE_SLACK * max(1.0, cumulative[-1])).any():
        raise SourceInvalid(f"feature {feature.name!r}: cumulative buckets decrease")
    clipped: np.ndarray = np.maximum(counts, 0.0)
    return clipped


def _categorical_row(feature: FeatureProfile, counters: dict[str, float]) -> np.ndarray:
    """Per-bin counts from per-category counters; unknown categories count as "other"."""
    index = {c: i for i, c in enumerate(feature.categories)}
    other = len(feature.categories)
    row = np.zeros(feature.bins)
    for category, value in counters.items():
        row[other if category == OTHER_CATEGORY else index.get(category, other)] += value
    return row


def _check_value(value: float, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise SourceInvalid(f"{what}: value {value} is not a finite non-negative count")
    return value


def _assemble(
    profile: Profile,
    numeric: dict[str, dict[str, float]],
    categorical: dict[str, dict[str, float]],
) -> np.ndarray:
    out = np.zeros((len(profile.features), profile.max_bins))
    for row, feature in enumerate(profile.features):
        if feature.kind == "numeric":
            # No series at all: the server has not seen this feature yet, zero counts.
            buckets = numeric.get(feature.name)
            if buckets:
                out[row, : feature.bins] = _numeric_row(feature, buckets)
        else:
            out[row, : feature.bins] = _categorical_row(feature, categorical.get(feature.name, {}))
    return out


# --- the model server's /metrics -------------------------------------------------------


def parse_metrics(text: str, profile: Profile, model: str | None = None) -> np.ndarray:
    """Counts since the server started, from one scrape of its ``/metrics``.

    ``model`` picks the ``model`` label; None accepts an endpoint that serves exactly one
    model. A feature with no series yet counts as zero (a fresh server has no children);
    a histogram whose buckets do not match the profile's edges is :class:`SourceInvalid`.
    Several pods or scrapes: add the arrays (and see :func:`window`).
    """
    # model -> feature -> le/category -> value, so that the model is chosen after reading.
    numeric: dict[str, dict[str, dict[str, float]]] = {}
    categorical: dict[str, dict[str, dict[str, float]]] = {}
    families: set[str] = set()
    try:
        for family in text_string_to_metric_families(text):
            families.add(family.name)
            for sample in family.samples:
                if sample.name == BUCKET_SAMPLE:
                    table, key = numeric, "le"
                elif sample.name == CATEGORY_SAMPLE:
                    table, key = categorical, "category"
                else:
                    continue
                labels = sample.labels
                if "feature" not in labels or key not in labels:
                    raise SourceInvalid(f"{sample.name} without 'feature' or {key!r} label")
                what = f"{sample.name}{labels}"
                by_feature = table.setdefault(labels.get("model", ""), {})
                series = by_feature.setdefault(labels["feature"], {})
                if labels[key] in series:
                    raise SourceInvalid(f"{what}: duplicate series")
                series[labels[key]] = _check_value(sample.value, what)
    except ValueError as err:
        raise SourceInvalid(f"malformed metrics text: {err}") from err
    _check_exported(profile, families)
    chosen = _choose_model(set(numeric) | set(categorical), model)
    return _assemble(profile, numeric.get(chosen, {}), categorical.get(chosen, {}))


def _check_exported(profile: Profile, families: set[str]) -> None:
    exported = {
        "numeric": {"kubeloop_model_feature", BUCKET_SAMPLE} & families,
        "categorical": {"kubeloop_model_feature_category", CATEGORY_SAMPLE} & families,
    }
    for kind in sorted({f.kind for f in profile.features}):
        if not exported[kind]:
            raise SourceInvalid(
                f"no {kind} feature metrics at this endpoint; is monitoring enabled?"
            )


def _choose_model(models: set[str], model: str | None) -> str:
    if model is None:
        if len(models) > 1:
            raise SourceInvalid(f"metrics for several models {sorted(models)}; name one")
        return next(iter(models), "")
    if models and model not in models:
        raise SourceInvalid(f"no metrics for model {model!r}; the endpoint has {sorted(models)}")
    return model


def window(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Counts observed between two scrapes of the same counters.

    Counters only grow, so a feature with any bin below its previous value was reset
    (the pod restarted): its current counts are all there is to count and become the
    window. Summed over pods, one restart undercounts that window, never overcounts.
    """
    prev = np.asarray(previous, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if prev.shape != cur.shape:
        raise ValueError(f"scrapes have different shapes {prev.shape} and {cur.shape}")
    reset = (cur < prev).any(axis=-1, keepdims=True)
    result: np.ndarray = np.where(reset, cur, cur - prev)
    return result


# --- the Prometheus HTTP API -----------------------------------------------------------


def uses_version(template: str) -> bool:
    """Whether a query template keeps model versions apart (``{version}``)."""
    return "{version}" in template


def render_query(template: str, **values: str) -> str:
    """Fill ``{feature}``, ``{model}``, ``{namespace}``, ``{window}``, ``{version}`` in a
    PromQL template.

    Values are escaped for PromQL double-quoted strings. Braces of label matchers are not
    placeholders, so templates need no doubled braces.
    """
    unknown = set(values) - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(f"unknown query placeholders {sorted(unknown)}")

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"query template uses {{{name}}} but no value was given")
        return values[name].replace("\\", "\\\\").replace('"', '\\"')

    return re.sub(r"\{(" + "|".join(PLACEHOLDERS) + r")\}", fill, template)


def _read_limited(response: requests.Response, max_bytes: int, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise SourceInvalid(f"response of {declared} bytes exceeds the {max_bytes}-byte limit")
    body = bytearray()
    while True:
        # read1 returns what has arrived (one socket read), so a server that trickles
        # bytes still meets the deadline check below. urllib3 < 2 lacks it.
        raw = response.raw
        chunk = raw.read1(_READ_CHUNK) if hasattr(raw, "read1") else raw.read(_READ_CHUNK)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            raise SourceInvalid(f"response exceeds the {max_bytes}-byte limit")
        if time.monotonic() > deadline:
            raise SourceUnavailable("response not complete before the deadline")


def _decode_vector(body: bytes) -> list[Series]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise SourceInvalid(f"response is not JSON: {err}") from err
    if not isinstance(document, dict):
        raise SourceInvalid("response is not a JSON object")
    if document.get("status") != "success":
        raise SourceInvalid(f"query failed: {document.get('error', document.get('status'))}")
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise SourceInvalid("expected an instant vector result")
    result = data.get("result")
    if not isinstance(result, list):
        raise SourceInvalid("result is not a list")
    return [_decode_series(item) for item in result]


def _decode_series(item: Any) -> Series:
    try:
        labels = item["metric"]
        _, text = item["value"]
        value = float(text)
    except (KeyError, TypeError, ValueError) as err:
        raise SourceInvalid(f"unexpected vector element {str(item)[:200]}") from err
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise SourceInvalid(f"unexpected labels {str(labels)[:200]}")
    return Series(labels=labels, value=value)


def _get_once(
    session: requests.Session,
    url: str,
    params: dict[str, str],
    accept: str,
    deadline: float,
    max_bytes: int,
) -> tuple[int, bytes]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise SourceUnavailable("no time left for the request")
    try:
        with session.get(
            url,
            params=params,
            # identity: the size limit then bounds what is held in memory, no zip bombs.
            headers={"Accept": accept, "Accept-Encoding": "identity"},
            timeout=remaining,
            stream=True,
        ) as response:
            if response.status_code >= 500 or response.status_code == 429:
                raise SourceUnavailable(f"{url} answered HTTP {response.status_code}")
            return response.status_code, _read_limited(response, max_bytes, deadline)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
        # Errors while streaming the body come from urllib3 or the socket, unwrapped.
        raise SourceUnavailable(f"{type(err).__name__}: {err}") from err


def _get(
    url: str,
    params: dict[str, str],
    accept: str,
    timeout: float,
    max_bytes: int,
    retries: int,
    backoff: float,
    total_timeout: float | None,
    session: requests.Session | None,
) -> tuple[int, bytes]:
    final = time.monotonic() + (timeout * (retries + 1) if total_timeout is None else total_timeout)
    http = requests.Session() if session is None else session
    try:
        attempt = 0
        while True:
            try:
                deadline = min(time.monotonic() + timeout, final)
                return _get_once(http, url, params, accept, deadline, max_bytes)
            except SourceUnavailable:
                delay = backoff * 2**attempt
                if attempt >= retries or time.monotonic() + delay >= final:
                    raise
                time.sleep(delay)
                attempt += 1
    finally:
        if session is None:
            http.close()


def query_prometheus(
    url: str,
    query: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 2,
    backoff: float = 0.5,
    total_timeout: float | None = None,
    session: requests.Session | None = None,
) -> list[Series]:
    """Run an instant query against the Prometheus HTTP API.

    Each attempt has ``timeout`` seconds, all of them together ``total_timeout``
    (default: ``timeout * (retries + 1)``); a server that trickles bytes is cut off at
    the deadline, so the call returns within the total plus one socket timeout at most.
    Unavailable answers (connection errors, timeouts, HTTP 5xx and 429) are retried up to
    ``retries`` times with doubling backoff while time remains; the last one is raised
    as :class:`SourceUnavailable`. Anything malformed, or a body over ``max_bytes``
    (checked while streaming), is :class:`SourceInvalid` at once.
    """
    status, body = _get(
        url.rstrip("/") + "/api/v1/query",
        {"query": query},
        "application/json",
        timeout,
        max_bytes,
        retries,
        backoff,
        total_timeout,
        session,
    )
    # Prometheus reports bad queries (4xx) as JSON with status "error".
    if status >= 400 and not body.strip().startswith(b"{"):
        raise SourceInvalid(f"Prometheus answered HTTP {status}")
    return _decode_vector(body)


def fetch_metrics(
    url: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 2,
    backoff: float = 0.5,
    total_timeout: float | None = None,
    session: requests.Session | None = None,
) -> str:
    """The text of a ``/metrics`` endpoint (the model server's), for :func:`parse_metrics`.

    Time bounds, retries, size limit and errors as for :func:`query_prometheus`; an
    HTTP 4xx is :class:`SourceInvalid` (a wrong path will not fix itself).
    """
    status, body = _get(
        url,
        {},
        "text/plain;version=0.0.4",
        timeout,
        max_bytes,
        retries,
        backoff,
        total_timeout,
        session,
    )
    if status >= 400:
        raise SourceInvalid(f"{url} answered HTTP {status}")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SourceInvalid(f"{url} did not answer UTF-8 text: {err}") from err


def _by_label(series: Iterable[Series], label: str, what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in series:
        if label not in s.labels:
            raise SourceInvalid(f"{what}: series without a {label!r} label: {s.labels}")
        if s.labels[label] in out:
            raise SourceInvalid(f"{what}: two series for {label}={s.labels[label]}")
        out[s.labels[label]] = _check_value(s.value, what)
    return out


def prometheus_counts(
    url: str,
    profile: Profile,
    *,
    model: str,
    namespace: str,
    window: str,
    version: str | None = None,
    bucket_query: str = DEFAULT_BUCKET_QUERY,
    category_query: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    session: requests.Session | None = None,
) -> np.ndarray:
    """Per-bin counts over ``window`` from Prometheus, one query per feature.

    ``bucket_query`` must return one series per ``le``, ``category_query`` one per
    ``category``; both are rendered with :func:`render_query`. ``version`` is the
    watched model's version (``{version}``): the default queries count its pods only,
    so that pods of another model serving beside it (a rollout, a canary), on their own
    reference's bins, are not summed with them. A template that uses ``{version}``
    needs it (ValueError); without it the default category query sums every version.
    Each query gets its own ``timeout`` and retries (see :func:`query_prometheus`).
    Prometheus's ``increase()`` already handles counter resets and extrapolates, so
    counts may be fractional.
    """
    if category_query is None:
        category_query = (
            DEFAULT_CATEGORY_QUERY if version is not None else ANY_VERSION_CATEGORY_QUERY
        )
    known = {"version": version} if version is not None else {}
    numeric: dict[str, dict[str, float]] = {}
    categorical: dict[str, dict[str, float]] = {}
    http = requests.Session() if session is None else session
    try:
        for feature in profile.features:
            template, table, label = (
                (bucket_query, numeric, "le")
                if feature.kind == "numeric"
                else (category_query, categorical, "category")
            )
            query = render_query(
                template,
                feature=feature.name,
                model=model,
                namespace=namespace,
                window=window,
                **known,
            )
            series = query_prometheus(url, query, timeout, max_bytes, session=http)
            table[feature.name] = _by_label(series, label, f"feature {feature.name!r}")
    finally:
        if session is None:
            http.close()
    return _assemble(profile, numeric, categorical)
