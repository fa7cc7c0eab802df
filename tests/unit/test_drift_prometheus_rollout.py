"""A Prometheus source during a rollout: pods of the old and of the new model serve side
by side, each exporting its inputs on its own model's reference bins. Two real model
servers on 127.0.0.1 stand for the two pods; a tiny Prometheus on 127.0.0.1 scrapes
them at each query (labelling their series with the namespace and pod, as Kubernetes
service discovery does) and answers the queries a DriftMonitor sends: an equality-only
``sum by (L) (increase(NAME{...}[W]))``, the increase being the counters' values since
the servers started at zero. Each pod must be counted against its own model version."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from kubeloop.controllers.common import Ctx, OperatorConfig
from kubeloop.controllers.driftread import MD_POD, References, scrape_prometheus
from kubeloop.controllers.runtime import Store, WorkQueue
from kubeloop.drift.reference import ReferenceInvalid, ReferenceNotServed, version_from_server
from kubeloop.drift.sources import (
    DEFAULT_BUCKET_QUERY,
    SourceInvalid,
    SourceUnavailable,
    parse_metrics,
    prometheus_counts,
)
from kubeloop.modeldir import LoadedModel, load_model
from kubeloop.serving.dataplane import DataPlane
from kubeloop.serving.rest import base_url, start
from tests.modelserver import shifted_rows, train

TIMEOUT = 10
# The query every pod was summed by before the model servers said their version.
ANY_VERSION_QUERY = DEFAULT_BUCKET_QUERY.replace(' version="{version}",', "")
QUERY = re.compile(r"sum by \((\w+)\) \(increase\((\w+)\{(.*)\}\[\w+\]\)\)")
OLD_URI, NEW_URI = "pvc://models/iris-v1", "pvc://models/iris-retrain-1"
MATCHER = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@contextlib.contextmanager
def serving(model: LoadedModel) -> Iterator[str]:
    """A model server (the REST front end and its data plane) on an ephemeral port."""
    plane = DataPlane(model.metadata)
    plane.set_model(model)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(start(plane, "127.0.0.1", 0), loop).result(TIMEOUT)
    try:
        yield base_url(runner.addresses[0])
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


class Prometheus(ThreadingHTTPServer):
    """Scrapes `pods` (pod name -> model server URL) in namespace `ml` at each query."""

    daemon_threads = True

    def __init__(self, pods: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.pods = pods
        self.queries: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        out = []
        for pod, url in self.pods.items():
            text = requests.get(f"{url}/metrics", timeout=TIMEOUT).text
            for family in text_string_to_metric_families(text):
                out += [
                    ({**s.labels, "namespace": "ml", "pod": pod}, s.value)
                    for s in family.samples
                    if s.name == name
                ]
        return out

    def evaluate(self, query: str) -> list[dict[str, Any]]:
        match = QUERY.fullmatch(query)
        assert match, f"the tiny Prometheus does not understand {query!r}"
        by, name, selector = match.groups()
        wanted = {
            k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in MATCHER.findall(selector)
        }
        sums: dict[str, float] = {}
        for labels, value in self.series(name):
            if all(labels.get(k) == v for k, v in wanted.items()):
                sums[labels[by]] = sums.get(labels[by], 0.0) + value
        return [{"metric": {by: key}, "value": [1700000000.0, repr(v)]} for key, v in sums.items()]


class Handler(BaseHTTPRequestHandler):
    server: Prometheus

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)["query"][0]
        self.server.queries.append(query)
        result = self.server.evaluate(query)
        body = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    root = tmp_path_factory.mktemp("rollout")
    # The new model was trained on other data: other bin edges, another version.
    return {
        "old": load_model(train(root / "old")),
        "new": load_model(train(root / "new", shift=2.0)),
    }


@pytest.fixture
def rollout(models: dict[str, LoadedModel]) -> Iterator[tuple[Prometheus, dict[str, str]]]:
    """One pod of each model, each having answered its share of the traffic."""
    with serving(models["old"]) as old, serving(models["new"]) as new:
        for url, rows in ((old, shifted_rows(40, 0.0, seed=1)), (new, shifted_rows(70, 2.0, 2))):
            body = {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": list(rows.shape),
                        "datatype": "FP64",
                        "data": rows.tolist(),
                    }
                ]
            }
            got = requests.post(f"{url}/v2/models/iris/infer", json=body, timeout=TIMEOUT)
            assert got.status_code == 200, got.text
        prometheus = Prometheus({"iris-old-0": old, "iris-new-0": new})
        thread = threading.Thread(target=prometheus.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield prometheus, {"old": old, "new": new}
        finally:
            prometheus.shutdown()
            prometheus.server_close()
            thread.join(TIMEOUT)


def test_each_pod_is_counted_against_its_own_model_version(
    models: dict[str, LoadedModel], rollout: tuple[Prometheus, dict[str, str]]
) -> None:
    prometheus, pods = rollout
    assert models["old"].profile and models["new"].profile
    assert models["old"].metadata.version != models["new"].metadata.version
    for which, sent in (("new", 70), ("old", 40)):
        model = models[which]
        assert model.profile is not None
        # The operator learns the version from a pod of the watched model.
        version = version_from_server(pods[which], "iris")
        assert version == model.metadata.version
        got = prometheus_counts(
            prometheus.url,
            model.profile,
            model="iris",
            namespace="ml",
            window="1m",
            version=version,
        )
        # Exactly that pod's own counts on its own bins: the other model's left out.
        own = requests.get(f"{pods[which]}/metrics", timeout=TIMEOUT).text
        np.testing.assert_array_equal(got, parse_metrics(own, model.profile, "iris"))
        assert got.sum(axis=1).tolist() == [sent] * len(model.profile.features)
    assert all(
        f'version="{models["old"].metadata.version}"' in q
        for q in prometheus.queries[-len(models["old"].profile.features) :]
    )


def test_summing_every_version_mixes_the_two_models_bins(
    models: dict[str, LoadedModel], rollout: tuple[Prometheus, dict[str, str]]
) -> None:
    """What a query without `{version}` does in a rollout (the source before the model
    servers said their version): the old pods' buckets are on edges the new model's
    profile does not have."""
    prometheus, _ = rollout
    profile = models["new"].profile
    assert profile is not None
    with pytest.raises(SourceInvalid, match="is not one of the profile's edges"):
        prometheus_counts(
            prometheus.url,
            profile,
            model="iris",
            namespace="ml",
            window="1m",
            bucket_query=ANY_VERSION_QUERY,
        )


def test_a_query_by_version_waits_for_the_version(
    models: dict[str, LoadedModel], rollout: tuple[Prometheus, dict[str, str]]
) -> None:
    prometheus, _ = rollout
    profile = models["new"].profile
    assert profile is not None
    with pytest.raises(SourceUnavailable, match="waiting for a ready pod of the watched model"):
        scrape_prometheus(prometheus.url, DEFAULT_BUCKET_QUERY, profile, "iris", "ml", "1m", None)
    assert prometheus.queries == []
    scrape = scrape_prometheus(
        prometheus.url,
        DEFAULT_BUCKET_QUERY,
        profile,
        "iris",
        "ml",
        "1m",
        models["new"].metadata.version,
    )
    assert scrape.counts.sum(axis=1).tolist() == [70] * len(profile.features)


def test_the_version_of_a_model_the_server_does_not_serve_is_refused(
    rollout: tuple[Prometheus, dict[str, str]],
) -> None:
    _, pods = rollout
    with pytest.raises(ReferenceInvalid, match="HTTP 404: no model version") as err:
        version_from_server(pods["new"], "wine")
    assert not isinstance(err.value, ReferenceNotServed)


def test_the_operator_reads_the_watched_models_version_from_its_pod(
    models: dict[str, LoadedModel], rollout: tuple[Prometheus, dict[str, str]]
) -> None:
    """The version a query counts is the one the ready pods of `status.activeModelUri`
    serve: the old model's pod is not asked."""
    _, pods = rollout
    port = int(urlparse(pods["new"]).port or 0)
    store = Store()
    for name, ip, uri in (("old-0", "127.0.0.2", OLD_URI), ("new-0", "127.0.0.1", NEW_URI)):
        store.put(
            MD_POD,
            {
                "metadata": {
                    "name": name,
                    "namespace": "ml",
                    "annotations": {"kubeloop.io/model-uri": uri},
                },
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            },
            owner="iris",
        )
    ctx = Ctx(kube=None, store=store, queue=WorkQueue({}), config=OperatorConfig())  # type: ignore[arg-type]
    monitor = {"metadata": {"name": "watch", "namespace": "ml"}}
    target: dict[str, Any] = {
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"model": {"uri": NEW_URI}, "runtime": {"port": port}},
        "status": {"activeModelUri": NEW_URI},
    }
    refs = References()
    assert asyncio.run(refs.version(ctx, monitor, target)) == models["new"].metadata.version
    # A model no ready pod serves yet: unknown, and the check waits.
    target["status"]["activeModelUri"] = "pvc://models/iris-v3"
    assert asyncio.run(refs.version(ctx, monitor, target)) is None
