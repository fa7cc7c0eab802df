"""The stable's side of a shadow (serving/mirror.py): copies of answered requests, their
comparison, the bounded queue's drop accounting, pairing with late labels; and the
operator's side: the counters parsed, summed and turned into `status.shadow`, the paired
tests against SciPy."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import requests
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from scipy import stats as sp

from kubeloop.modeldir import LoadedModel
from kubeloop.serving.dataplane import DataPlane
from kubeloop.serving.mirror import Mirror
from kubeloop.shadow import report, stats
from kubeloop.shadow.figures import parse_shadow, total
from tests.unit.test_serving import (  # noqa: F401
    TIMEOUT,
    infer,
    matrix,
    metric_samples,
    model,
    model_dir,
    running,
)

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
CLASSIFIER = SimpleNamespace(classes=np.array([0, 1, 2]), class_labels=["a", "b", "c"])
REGRESSOR = SimpleNamespace(classes=None, class_labels=[])


def shadow_counter(samples: dict[Any, float], name: str, **labels: str) -> float:
    key = (f"kubeloop_model_shadow_{name}", frozenset({"model": "iris", **labels}.items()))
    return samples.get(key, 0.0)


def wait_counter(url: str, name: str, want: float) -> dict[Any, float]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        samples = metric_samples(url)
        if shadow_counter(samples, name) >= want:
            return samples
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {want}: {samples}")


def wait_settled(url: str, copies: int) -> dict[Any, float]:
    """Wait until each of ``copies`` sampled copies is accounted for (mirrored or
    dropped) and every mirrored one has come back as an error (the shadow is down
    or too slow): the copies still in flight are then none."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        samples = metric_samples(url)
        mirrored = shadow_counter(samples, "mirrored_total")
        dropped = shadow_counter(samples, "dropped_total")
        if mirrored + dropped == copies and shadow_counter(samples, "errors_total") == mirrored:
            return samples
        time.sleep(0.05)
    raise AssertionError(f"the {copies} copies never settled: {samples}")


@pytest.fixture
def shadow_url(model: LoadedModel) -> Iterator[str]:  # noqa: F811
    shadow = DataPlane(model.metadata, max_batch_size=1)
    shadow.set_model(model)
    with running(shadow) as url:
        yield url


def champion(model: LoadedModel, shadow_url: str, percent: int = 100) -> DataPlane:  # noqa: F811
    plane = DataPlane(model.metadata, shadow_url=shadow_url, shadow_percent=percent)
    plane.set_model(model)
    return plane


def test_copies_are_answered_compared_and_paired_with_labels(
    model: LoadedModel,  # noqa: F811
    shadow_url: str,
) -> None:
    plane = champion(model, shadow_url)
    with running(plane) as url:
        ids = []
        for _ in range(10):
            answer = infer(url, matrix(IRIS_ROWS)).json()
            ids.append(answer["id"])  # an id the client did not send, to label with
        given = infer(url, {**matrix(IRIS_ROWS[:1]), "id": "mine"}).json()
        assert given["id"] == "mine"
        assert len(set(ids)) == 10
        samples = wait_counter(url, "compared_total", 31)
        assert shadow_counter(samples, "mirrored_total") == 11
        assert shadow_counter(samples, "agreed_total") == 31  # the same model: all agree
        assert shadow_counter(samples, "errors_total") == 0
        assert shadow_counter(samples, "dropped_total") == 0
        # Copies close together go as one request of their rows (LINGER_S).
        assert 1 <= shadow_counter(samples, "request_duration_seconds_count") <= 11
        predicted = infer(url, matrix(IRIS_ROWS)).json()["outputs"][0]["data"]
        wait_counter(url, "compared_total", 34)
        # Label row 1 of the first request right and row 0 of the second wrong; one
        # record of a request this server never mirrored; one label twice.
        records = [
            {"id": ids[0], "row": 1, "label": predicted[1]},
            {"id": ids[1], "label": (predicted[0] + 1) % 3},
            {"id": "unknown", "label": 0},
            {"id": ids[0], "row": 1, "label": predicted[1]},
        ]
        for record in records:
            record.update(prediction=0, model_version=plane.version)
        body = {"records": records}
        response = requests.post(f"{url}/v2/models/iris/feedback", json=body, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        samples = metric_samples(url)
        labelled = "labelled_total"
        assert shadow_counter(samples, labelled, champion="right", shadow="right") == 1
        assert shadow_counter(samples, labelled, champion="wrong", shadow="wrong") == 1
        assert shadow_counter(samples, labelled, champion="right", shadow="wrong") == 0
        assert shadow_counter(samples, "labels_unmatched_total") == 2  # unknown, and again
        bad = {"records": [{**records[0], "id": 7}]}
        refused = requests.post(f"{url}/v2/models/iris/feedback", json=bad, timeout=TIMEOUT)
        assert refused.status_code == 400 and "'id'" in refused.json()["error"]


def test_a_down_shadow_fails_no_client_request_and_is_not_sent_to(model: LoadedModel) -> None:  # noqa: F811
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once it closes
    plane = champion(model, f"http://127.0.0.1:{port}")
    with running(plane) as url:
        assert infer(url, matrix(IRIS_ROWS)).status_code == 200
        wait_counter(url, "errors_total", 1)
        for _ in range(19):
            assert infer(url, matrix(IRIS_ROWS)).status_code == 200
        samples = wait_settled(url, 20)
        # After a failure, copies are dropped for a second instead of sent to nobody.
        mirrored = shadow_counter(samples, "mirrored_total")
        assert mirrored >= 1 and shadow_counter(samples, "dropped_total") >= 1, samples
        assert shadow_counter(samples, "compared_total") == 0
        requests_ok = (
            "kubeloop_model_requests_total",
            frozenset({"model": "iris", "status": "200"}.items()),
        )
        assert samples[requests_ok] == 20


def test_without_a_shadow_answers_are_as_before(model: LoadedModel) -> None:  # noqa: F811
    plane = DataPlane(model.metadata)
    plane.set_model(model)
    with running(plane) as url:
        answer = infer(url, matrix(IRIS_ROWS)).json()
        assert "id" not in answer
        assert not any(k[0].startswith("kubeloop_model_shadow") for k in metric_samples(url))


def test_copies_that_queued_up_go_in_one_request_and_are_compared_each() -> None:
    registry = CollectorRegistry()
    asked: list[tuple[str, int]] = []

    class Recording(Mirror):
        async def _ask(self, request_id: str, rows: np.ndarray) -> list[Any]:
            asked.append((request_id, len(rows)))
            return ["0"] * 3 + ["1"] * (len(rows) - 3)  # the 4th row on disagrees

    async def scenario() -> None:
        mirror = Recording(registry, "iris", "http://s", 100, CLASSIFIER, senders=1)  # type: ignore[arg-type]
        for i, n in enumerate((1, 2, 3)):  # queued before the sender runs
            mirror.offer(str(i), np.zeros((n, 4)), np.zeros(n, dtype=int))
        await asyncio.wait_for(mirror.queue.join(), TIMEOUT)
        assert [len(mirror.pairs[k]) for k in "012"] == [1, 2, 3]
        await mirror.close()

    asyncio.run(scenario())
    assert asked == [("0", 6)]
    sample = parse_shadow(generate_latest(registry).decode(), "iris")
    assert (sample.mirrored, sample.compared, sample.agreed) == (3, 6, 3)


@pytest.mark.parametrize(("linger", "requests"), [(0.2, [3]), (0.0, [1, 2])])
def test_a_sender_waits_a_moment_for_the_copies_that_follow(
    linger: float, requests: list[int]
) -> None:
    """Copies offered one by one, while the sender already holds the first: with a
    linger they go in one request to the shadow; without one the first goes alone."""
    registry = CollectorRegistry()
    asked: list[int] = []

    class Recording(Mirror):
        async def _ask(self, request_id: str, rows: np.ndarray) -> list[Any]:
            asked.append(len(rows))
            return ["0"] * len(rows)

    async def scenario() -> None:
        mirror = Recording(registry, "iris", "http://s", 100, CLASSIFIER, senders=1, linger=linger)  # type: ignore[arg-type]
        mirror.offer("a", np.zeros((1, 4)), np.zeros(1, dtype=int))
        while not mirror.queue.empty():  # the sender has taken the first copy
            await asyncio.sleep(0)
        for name in "bc":
            mirror.offer(name, np.zeros((1, 4)), np.zeros(1, dtype=int))
        await asyncio.wait_for(mirror.queue.join(), TIMEOUT)
        await mirror.close()

    asyncio.run(scenario())
    assert asked == requests
    sample = parse_shadow(generate_latest(registry).decode(), "iris")
    assert (sample.mirrored, sample.compared, sample.agreed) == (3, 3, 3)


def test_a_large_batch_is_kept_in_pieces_with_clients_served_between() -> None:
    """The pairs of a batch of copies are kept YIELD_EVERY at a time, returning to the
    event loop between, so that the clients' requests are not held behind all of it."""
    registry = CollectorRegistry()
    seen: list[int] = []

    class Recording(Mirror):
        async def _ask(self, request_id: str, rows: np.ndarray) -> list[Any]:
            return ["0"] * len(rows)

    async def scenario() -> None:
        mirror = Recording(registry, "iris", "http://s", 100, CLASSIFIER, senders=1, linger=0)  # type: ignore[arg-type]
        for i in range(100):
            mirror.offer(str(i), np.zeros((1, 4)), np.zeros(1, dtype=int))

        async def client() -> None:  # what another request's handler would see
            while len(mirror.pairs) < 100:
                seen.append(len(mirror.pairs))
                await asyncio.sleep(0)

        watcher = asyncio.create_task(client())
        await asyncio.wait_for(mirror.queue.join(), TIMEOUT)
        await asyncio.wait_for(watcher, TIMEOUT)
        await mirror.close()

    asyncio.run(scenario())
    assert any(0 < n < 100 for n in seen), sorted(set(seen))


def test_a_full_queue_drops_and_counts_and_sampling_takes_its_share() -> None:
    registry = CollectorRegistry()
    draws = iter([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.45, 0.55])

    async def scenario() -> Mirror:
        mirror = Mirror(
            registry,
            "iris",
            "http://shadow",
            50,
            CLASSIFIER,
            queue_size=2,
            senders=0,
            sample=lambda: next(draws),
        )
        for i in range(10):  # 5 sampled (draw < 0.5): 2 queued, 3 dropped
            mirror.offer(str(i), np.zeros((1, 4)), np.array([0]))
        return mirror

    mirror = asyncio.run(scenario())
    sample = parse_shadow(generate_latest(registry).decode(), "iris")
    assert (sample.mirrored, sample.dropped, mirror.queue.qsize()) == (2, 3, 2)


def test_pairs_are_bounded_and_regression_errors_are_paired() -> None:
    registry = CollectorRegistry()
    mirror = Mirror(registry, "m", "http://s", 100, REGRESSOR, max_pair_rows=4)  # type: ignore[arg-type]
    champion_answers = [[1.0, 2.0], [3.0], [5.0, 6.0]]
    shadow_answers = [[1.5, 2.0], [2.0], [5.0, 8.0]]
    for i, (a, b) in enumerate(zip(champion_answers, shadow_answers, strict=True)):
        mirror.compare(str(i), list(a), list(b))
    assert list(mirror.pairs) == ["1", "2"] and mirror.pair_rows == 3  # "0" forgotten
    labels = {("1", 0): 2.5, ("2", 0): 4.0, ("2", 1): 7.0, ("0", 0): 1.0}
    for (request_id, row), label in labels.items():
        mirror.label(request_id, row, label)
    sample = parse_shadow(generate_latest(registry).decode(), "m")
    champion_errors = np.array([0.5, 1.0, 1.0])  # |3-2.5|, |5-4|, |6-7|
    shadow_errors = np.array([0.5, 1.0, 1.0])  # |2-2.5|, |5-4|, |8-7|
    assert sample.compared == 5 and not sample.classifier
    assert sample.abs_difference == pytest.approx(0.5 + 0 + 1 + 0 + 2)
    assert sample.labelled == 3 and sample.unmatched == 1
    assert sample.champion_abs_error == pytest.approx(champion_errors.sum())
    assert sample.shadow_abs_error == pytest.approx(shadow_errors.sum())


def _classifier_text(agree: int, disagree: int, b: int, c: int, both: int) -> str:
    """A classifier's mirror counters after these answers and labels."""
    registry = CollectorRegistry()
    mirror = Mirror(registry, "iris", "http://s", 100, CLASSIFIER)  # type: ignore[arg-type]
    mirror.compare("agree", ["0"] * agree, ["0"] * agree)
    mirror.compare("disagree", ["0"] * disagree, ["1"] * disagree)
    for row in range(b):  # champion right (0), shadow wrong (1)
        mirror.label("disagree", row, 0)
    for row in range(b, b + c):  # the shadow right
        mirror.label("disagree", row, "b")  # by the class's name
    for row in range(both):
        mirror.label("agree", row, 0)
    return generate_latest(registry).decode()


def test_status_figures_against_a_direct_computation() -> None:
    # Two pods' counters, summed: 90 + 30 agreeing rows, 10 + 20 disagreeing.
    pods = [
        parse_shadow(_classifier_text(90, 10, 6, 1, 40), "iris"),
        parse_shadow(_classifier_text(30, 20, 9, 4, 10), "iris"),
    ]
    summed = total(pods)
    shadow = report.figures(summed, len(pods))
    assert shadow.samples == 150
    assert shadow.agreement == pytest.approx(120 / 150)
    labelled = shadow.labelled
    assert labelled is not None and labelled.samples == 6 + 1 + 40 + 9 + 4 + 10
    assert (labelled.champion_only_right, labelled.shadow_only_right) == (15, 5)
    assert labelled.champion_accuracy == pytest.approx((50 + 15) / 70, abs=1e-6)
    assert labelled.shadow_accuracy == pytest.approx((50 + 5) / 70, abs=1e-6)
    assert labelled.test == "mcnemar-exact"
    assert labelled.p_value == pytest.approx(sp.binomtest(5, 20, 0.5).pvalue, rel=1e-9)
    assert report.summary(shadow).startswith("agree 80.0% n=150 p=")


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 0), (5, 1), (10, 3), (40, 20), (500, 460)])
def test_mcnemar_exact_matches_scipy(b: int, c: int) -> None:
    want = sp.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    assert stats.mcnemar_exact(b, c) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("n", [2, 3, 10, 100, 5000])
def test_paired_t_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    champion_errors = np.abs(rng.normal(size=n))
    shadow_errors = np.abs(champion_errors + rng.normal(0.1, 1, size=n))
    d = champion_errors - shadow_errors
    t, p = stats.paired_t(n, float(d.sum()), float((d * d).sum()))
    want = sp.ttest_rel(champion_errors, shadow_errors)
    assert t == pytest.approx(want.statistic, rel=1e-9)
    assert p == pytest.approx(want.pvalue, rel=1e-6)


def test_paired_t_edges() -> None:
    assert stats.paired_t(1, 1.0, 1.0) == (None, None)
    assert stats.paired_t(5, 0.0, 0.0) == (0.0, 1.0)
    assert stats.paired_t(5, 5.0, 5.0)[1] == 0.0  # every difference 1: certain


@contextmanager
def slow_server(seconds: float) -> Iterator[str]:
    """An HTTP server that answers every request after `seconds`: a slow shadow."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(seconds)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app, shutdown_timeout=0.1)

    async def begin() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    port = asyncio.run_coroutine_threadsafe(begin(), loop).result(TIMEOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


def test_a_slow_shadow_slows_no_client_request(model: LoadedModel) -> None:  # noqa: F811
    with slow_server(5.0) as shadow, running(champion(model, shadow)) as url:
        took = []
        for _ in range(16):
            started = time.perf_counter()
            assert infer(url, matrix(IRIS_ROWS)).status_code == 200
            took.append(time.perf_counter() - started)
        assert max(took) < 1.0, took  # the shadow takes 5 s; the copies time out at 2 s
        # Every copy is accounted for: sent and timed out, or dropped in the pause after.
        samples = wait_settled(url, 16)
        assert shadow_counter(samples, "mirrored_total") >= 1, samples
