"""`onDrift.evaluate.live`: the evaluation Job is told every serving pod's labelled rows,
the verdict's live scores reach the status, and the spec needs a holdout unless the
live rows stand instead of it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from kubeloop.api.driftmonitor import Evaluate, LiveScores
from kubeloop.controllers.retrain_verdict import parse_verdict
from kubeloop.controllers.servingpods import Endpoints, live_rows_urls
from kubeloop.render import evaluation as render_eval


def test_the_job_reads_every_pods_rows_beside_the_holdout() -> None:
    evaluate = Evaluate.model_validate(
        {"data": {"uri": "pvc://data/h.csv"}, "metric": "accuracy", "live": {"minRows": 50}}
    )
    urls = ["http://10.0.0.1:8080/v2/models/iris/feedback/rows", "http://10.0.0.2:8080/x"]
    args = render_eval.args(evaluate, "pvc://m/a", "pvc://m/b", urls)
    assert [args[i + 1] for i, a in enumerate(args) if a == "--live-rows"] == urls
    assert args[args.index("--live-min-rows") + 1] == "50"
    assert args[args.index("--live-mode") + 1] == "beside"
    assert args[args.index("--data") + 1] == "file:///mnt/pvc/data/h.csv"
    # Without `live`, nothing of it, whatever pods there are.
    plain = Evaluate.model_validate({"data": {"uri": "/h.csv"}, "metric": "accuracy"})
    assert "--live-rows" not in render_eval.args(plain, None, "/b", urls)


def test_instead_needs_no_holdout_and_anything_else_does() -> None:
    instead = Evaluate.model_validate({"metric": "accuracy", "live": {"mode": "Instead"}})
    args = render_eval.args(instead, None, "/b", ["http://p/rows"])
    assert "--data" not in args and args[args.index("--live-mode") + 1] == "instead"
    job = render_eval.render_job(
        instead, name="j", namespace="ns", monitor="m", champion=None, challenger="pvc://m/b",
        image="img", owner={}, fallback_scheduling=None, live_rows=["http://p/rows"],
    )
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [*args[:1], *[
        "--challenger", "file:///mnt/pvc/m/b"], *args[3:]]
    for spec in ({"metric": "accuracy"}, {"metric": "accuracy", "live": {}}):
        with pytest.raises(ValidationError, match="needs data"):
            Evaluate.model_validate(spec)


def test_the_rows_urls_are_every_pods_whichever_model_it_serves() -> None:
    found = Endpoints(["http://10.0.0.1:8080/metrics"], ["http://10.0.0.9:9000/metrics"])
    assert live_rows_urls(found, "iris") == [
        "http://10.0.0.1:8080/v2/models/iris/feedback/rows",
        "http://10.0.0.9:9000/v2/models/iris/feedback/rows",
    ]


def test_the_live_scores_of_a_verdict_are_read() -> None:
    verdict = {
        "champion": 0.3, "challenger": 0.9, "passed": False, "reason": "NotBetter",
        "live": {"rows": 150, "champion": 0.99, "challenger": 0.33, "passed": False},
    }
    got = parse_verdict(json.dumps(verdict))
    assert got is not None
    assert got["live"] == LiveScores(rows=150, champion=0.99, challenger=0.33, passed=False)
    too_few = dict(verdict, live={"rows": 3, "minRows": 100, "mode": "beside"})
    got = parse_verdict(json.dumps(too_few))
    assert got is not None and got["live"] == LiveScores(rows=3)
    assert "live" not in (parse_verdict(json.dumps(dict(verdict, live="x"))) or {})
