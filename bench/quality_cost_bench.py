#!/usr/bin/env python3
"""What the quality counters cost the model server's clients (issue 23's last figure).

In bench/shadow_bench.py's protocol (the serving bench's: the server pinned to one core,
wrk on the other, 16 connections of 1-row REST JSON, rounds in alternating order,
medians, each round's ratio to the other contender in the same round, every answer
checked against scikit-learn's predict), two `kubeloop serve` processes of the same
model, drift histograms on in both:

- ``quality-off``: the model's profile without its calibration (no estimated accuracy
  counted per answer), `--labelled-rows 0`, and no label sent;
- ``quality-on``: the profile as trained (estimation on every answer), the labelled-rows
  ring as deployed (10,000), and labels sent back all along through
  `POST /v2/models/{name}/feedback` with their inputs: 10% of the stable's requests/s
  (500 a second, in batches of 50), as the quality bench assumes.

Goal: quality-on keeps at least 0.95x quality-off's requests/s; met only when the worst
round does. Results in bench/results/quality-cost.json and the table between the
quality-cost markers of bench/README.md.

    make bench-quality-cost   # = .venv/bin/python bench/quality_cost_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from sklearn.datasets import load_iris

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving_bench as sb
import shadow_bench as shb
from kubeloop.modeldir import PROFILE_FILE, write_manifest

RESULTS = sb.REPO / "bench" / "results" / "quality-cost.json"
README = sb.REPO / "bench" / "README.md"
START, END = "<!-- quality-cost-bench:start -->", "<!-- quality-cost-bench:end -->"
GOAL = 0.95
LABELS_PER_S, BATCH = 500, 50


def without_calibration(model_dir: Path, out: Path) -> Path:
    """A copy of the model directory whose profile has no calibration (its manifest
    rewritten), so that the server counts no estimated accuracy."""
    shutil.copytree(model_dir, out)
    profile = json.loads((out / PROFILE_FILE).read_text())
    assert profile.pop("calibration", None) is not None, "the trained profile is calibrated"
    (out / PROFILE_FILE).write_text(json.dumps(profile))
    write_manifest(out)
    return out


def feedback_body(version: str, rows: list[list[float]], classes: list[int]) -> dict[str, Any]:
    """A batch of labels, each with what the model answered and the request's row."""
    records = [
        {"label": int(c), "prediction": int(c), "inputs": row}
        for row, c in zip(rows, classes, strict=True)
    ]
    return {"model_version": version, "records": records}


class Labels(threading.Thread):
    """Posts a batch of labels every BATCH / LABELS_PER_S seconds until stopped."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.stopped = threading.Event()
        self.sent = self.refused = 0

    def run(self) -> None:
        session = requests.Session()
        while not self.stopped.wait(BATCH / LABELS_PER_S):
            answer = session.post(self.url, json=self.body, timeout=10)
            if answer.ok:
                self.sent += len(self.body["records"])
            else:
                self.refused += 1


def counted(server: sb.Server, version: str) -> float:
    """Labels the server counted for `version`: a classifier's confusion counts (a
    regressor's would be kubeloop_model_feedback_total)."""
    text = requests.get(f"{server.base_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("kubeloop_model_feedback_confusion_total{",
                            "kubeloop_model_feedback_total{"))
        and f'version="{version}"' in line
    )


def render(results: dict[str, Any]) -> str:
    cell, ratios = results["cell"], results["ratios"]
    commit = results["commit"]
    dirty = " with uncommitted changes" if commit.get("dirty") else ""
    rows = []
    for key, label in (("quality-off", "off"), ("quality-on", "on")):
        row, rng = cell[key], cell[key]["range"]
        rows.append(
            f"| {label} | {row['requests_per_s']:,.0f} ({rng['requests_per_s'][0]:,.0f} to"
            f" {rng['requests_per_s'][1]:,.0f}) | {row['p99_ms']:.1f} ({rng['p99_ms'][0]:.1f}"
            f" to {rng['p99_ms'][1]:.1f}) |"
        )
    met = ratios["worst_round_requests_per_s_ratio"] >= GOAL
    return "\n".join([
        START,
        "## Quality counters: what they cost the server's clients",
        "",
        "`make bench-quality-cost` (`bench/quality_cost_bench.py`): the same model served"
        " twice under bench-shadow's protocol (16 connections, 1-row REST JSON,"
        f" {results['protocol']['rounds']} x {results['protocol']['duration_s']} s rounds,"
        " order reversed every round, medians): quality off (profile without calibration,"
        " no labelled-rows ring, no labels) and on (estimated accuracy counted per answer,"
        f" the 10,000-row ring, and {LABELS_PER_S} labels a second with their inputs sent"
        f" through the feedback route all along: {results['labels_counted']:,.0f} counted)."
        f" Run at {commit['sha'][:12]}{dirty}, {results['date']};"
        f" {results['machine']['cpus']} CPUs, load average before"
        f" {results['loadavg_before'][0]:.2f}; results in `bench/results/quality-cost.json`.",
        "",
        "| quality counting | req/s, median (range) | p99 ms, median (range) |",
        "| --- | ---: | ---: |",
        *rows,
        "",
        f"On vs off: **{ratios['requests_per_s_ratio']:.2f}x** requests/s (worst round"
        f" {ratios['worst_round_requests_per_s_ratio']:.2f}x), p99"
        f" {ratios['p99_ratio']:.2f}x. Goal (issue 23): at most a 5% loss, met only when"
        f" the worst round is: **{'met' if met else 'missed'}**.",
        END,
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    load_before = sb.loadavg()
    servers: list[sb.Server] = []
    labels: Labels | None = None
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            model_dir = sb.train(workdir, (shb.ESTIMATOR,))[shb.ESTIMATOR]
            plain = without_calibration(model_dir, workdir / "no-calibration")
            started = {
                "quality-off": shb.start(
                    "quality-off", plain, workdir, ["--labelled-rows", "0"], sb.SERVER_CPU
                ),
                "quality-on": shb.start("quality-on", model_dir, workdir, [], sb.SERVER_CPU),
            }
            servers += started.values()
            for server in servers:
                sb.wait_ready(server)
            iris = load_iris()
            rows = iris.data[:1]
            expected = list(sb.joblib.load(model_dir / "model.joblib").predict(rows))
            on = started["quality-on"]
            meta = requests.get(f"{on.base_url}/v2/models/{shb.ESTIMATOR}", timeout=10).json()
            version = meta["versions"][0]
            picked = iris.data[:: len(iris.data) // BATCH][:BATCH]
            classes = sb.joblib.load(model_dir / "model.joblib").predict(picked)
            body = feedback_body(version, picked.tolist(), [int(c) for c in classes])
            labels = Labels(f"{on.base_url}/v2/models/{shb.ESTIMATOR}/feedback", body)
            labels.start()
            args.grpcload = ""
            cell = sb.measure(
                dict(started), shb.ESTIMATOR, "rest-json", 1, args.connections,
                sb.make_bodies(rows, [shb.ESTIMATOR]), workdir, args, expected,
            )
            labels.stopped.set()
            labels.join(10)
            labels_counted = counted(on, version)
        finally:
            if labels is not None:
                labels.stopped.set()
            for server in servers:
                server.stop()
    assert labels is not None
    if labels.refused or labels_counted != labels.sent:
        raise SystemExit(f"{labels.refused} feedback batches refused; "
                         f"{labels_counted:.0f} of {labels.sent} labels counted")
    ratios = shb.against_none({"none": cell["quality-off"], **cell}, ["quality-on"])
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": sb.git_commit(),
        "machine": {"cpu": sb.cpu_model(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "loadavg_before": load_before,
        "loadavg_after": cell.get("loadavg_after"),
        "protocol": {"rounds": args.rounds, "duration_s": args.duration,
                     "warmup_s": args.warmup, "connections": args.connections,
                     "labels_per_s": LABELS_PER_S, "labels_batch": BATCH},
        "labels_sent": labels.sent,
        "labels_counted": labels_counted,
        "cell": cell,
        "ratios": ratios["quality-on"],
        "goal": f"quality-on requests/s >= {GOAL}x quality-off's in the worst round",
    }
    args.results.write_text(json.dumps(results, indent=1, default=str) + "\n")
    shb.write_readme(args.readme, render(results), START, END)
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
