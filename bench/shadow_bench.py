#!/usr/bin/env python3
"""Mirroring overhead: the stable's clients with and without a shadow (issue 26).

In the serving bench's protocol (bench/serving_bench.py: the server pinned to one core,
wrk on the other, closed loop, rounds in alternating order, medians with each round's
range, every answer checked against scikit-learn's predict), four `kubeloop serve`
processes of the same model, started up front:

- ``none``: no shadow;
- ``mirror-100``: every answered request copied to a live shadow (a second `kubeloop
  serve` of the same model, pinned to the load core: in a cluster it is another pod);
- ``shadow-down``: copies sent to a port where nothing listens;
- ``shadow-slow``: copies sent to a server that answers after 5 s (the copies time out
  at 2 s, the queue fills and drops).

Each ends with its shadow counters (mirrored, dropped, errors, compared) read from its
/metrics, so the table says that the copies were made. Results in
bench/results/shadow.json.

    .venv/bin/python bench/shadow_bench.py [--duration 10 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving_bench as sb

RESULTS = sb.REPO / "bench" / "results" / "shadow.json"
ESTIMATOR = "gradient-boosting"
SLOW_SERVER = """
import asyncio, sys
from aiohttp import web
async def slow(request):
    await asyncio.sleep(5.0)
    return web.json_response({})
app = web.Application()
app.router.add_post("/{tail:.*}", slow)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def start(label: str, model_dir: Path, workdir: Path, extra: list[str], cpu: str) -> sb.Server:
    port = sb.free_port()
    argv = ["taskset", "-c", cpu, sys.executable, "-m", "kubeloop", "serve"]
    argv += ["--model-dir", str(model_dir), "--name", ESTIMATOR, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", "1", "--max-batch-size", "64"]
    argv += ["--max-batch-wait-ms", "1", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELOOP_")}
    env["PYTHONPATH"] = str(sb.REPO / "operator")
    with (workdir / f"{label}.log").open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return sb.Server(label, process, f"http://127.0.0.1:{port}", "", {ESTIMATOR: ESTIMATOR})


def shadow_counters(server: sb.Server) -> dict[str, float]:
    text = requests.get(f"{server.base_url}/metrics", timeout=10).text
    return {
        sample.name.removeprefix("kubeloop_model_shadow_"): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("kubeloop_model_shadow_") and sample.name.endswith("_total")
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    servers: list[sb.Server] = []
    slow = None
    load_before = sb.loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            model_dir = sb.train(workdir, (ESTIMATOR,))[ESTIMATOR]
            shadow = start("shadow", model_dir, workdir, [], sb.LOAD_CPU)
            servers.append(shadow)
            slow_port, down_port = sb.free_port(), sb.free_port()
            slow = subprocess.Popen(
                ["taskset", "-c", sb.LOAD_CPU, sys.executable, "-c", SLOW_SERVER, str(slow_port)]
            )
            contenders = {
                "none": [],
                "mirror-100": ["--shadow-url", shadow.base_url],
                "shadow-down": ["--shadow-url", f"http://127.0.0.1:{down_port}"],
                "shadow-slow": ["--shadow-url", f"http://127.0.0.1:{slow_port}"],
            }
            started = {
                key: start(key, model_dir, workdir, extra, sb.SERVER_CPU)
                for key, extra in contenders.items()
            }
            servers += started.values()
            for server in servers:
                sb.wait_ready(server)
            rows = load_iris().data[:1]
            bodies = sb.make_bodies(rows, [ESTIMATOR])
            expected = list(sb.joblib.load(model_dir / "model.joblib").predict(rows))
            args.grpcload = ""
            cell = sb.measure(
                dict(started),
                ESTIMATOR,
                "rest-json",
                1,
                args.connections,
                bodies,
                workdir,
                args,
                expected,
            )
            for key, server in started.items():
                cell[key]["shadow_counters"] = shadow_counters(server)
        finally:
            for server in servers:
                server.stop()
            if slow is not None:
                slow.terminate()
                slow.wait(10)
    base = cell["none"]
    summary = {
        key: {
            "requests_per_s_ratio": round(cell[key]["requests_per_s"] / base["requests_per_s"], 3),
            "p99_ratio": round(cell[key]["p99_ms"] / base["p99_ms"], 3),
        }
        for key in contenders
    }
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": sb.git_commit(),
        "machine": {
            "cpu": sb.cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "loadavg_before": load_before,
        "loadavg_after": cell.get("loadavg_after"),
        "cell": cell,
        "against_none": summary,
        "goal": "mirror-100: requests/s >= 0.9x none, p99 <= 1.1x none",
    }
    args.results.write_text(json.dumps(results, indent=1, default=str) + "\n")
    for key, ratios in summary.items():
        print(
            f"{key}: {cell[key]['requests_per_s']:,.0f} req/s, p99 {cell[key]['p99_ms']:.2f} ms,"
            f" x{ratios['requests_per_s_ratio']} throughput, x{ratios['p99_ratio']} p99;"
            f" {cell[key].get('shadow_counters', {})}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
