#!/usr/bin/env python3
"""BatchPrediction scale-out on the real node: the same dataset and model scored by one
pod with one scoring process, two pods with one each, and one pod with two.

    python bench/batch_scaleout.py [--rows 10000000] [--rounds 3]

The dataset and the model are bench-batch's (bench/batch_bench.py, made once per size
under ~/.cache/kubeloop/bench). The run uses the local cluster with its real node (hack/
cluster.py, started if it is not running), the kubeloop image (hack/build-image.sh) and
the operator installed by its Helm chart, as e2e/real does; the files are linked into a
hostPath volume that the pods read as pvc://models/. Each round runs every contender
once, the order alternating; a run is timed from its create to the Succeeded phase
seen on the resource (pods started, every shard scored, the output finalized), and its
output's row count is checked against the dataset's.

Results: bench/results/batch-scaleout.json and the "Batch scale-out" section of
bench/README.md (`--render-only` re-renders it from the file).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator"), str(REPO / "bench")]

from batch_bench import DEFAULT_CACHE, generate, git_commit, round_orders  # noqa: E402
from shadow_bench import write_readme  # noqa: E402

RESULTS = REPO / "bench" / "results" / "batch-scaleout.json"
README = REPO / "bench" / "README.md"
START = "<!-- batch-scaleout:start -->"
END = "<!-- batch-scaleout:end -->"
# name: (pods, CPU request per pod). A pod scores with one process per CPU it requests,
# a part of one counting as one; the real node offers 1800m, 100m of them the operator
# pod's: two pods of 850m fit side by side, one of 1700m gets two processes.
CONTENDERS = {"1x1": (1, "850m"), "2x1": (2, "850m"), "1x2": (1, "1700m")}
LABELS = {
    "1x1": "1 pod, 1 process (850m)",
    "2x1": "2 pods, 1 process each (850m each)",
    "1x2": "1 pod, 2 processes (1700m)",
}
RUN_TIMEOUT_S = 3600


def install(cluster: Any) -> None:
    """The image in the node's containerd and the operator by its chart, as e2e/real."""
    from e2e.real.conftest import RELEASE, SYSTEM_NS, chart_values, helm

    subprocess.run(["bash", str(REPO / "hack" / "build-image.sh"), "--import"], check=True,
                   cwd=REPO, stdout=subprocess.DEVNULL)
    helm(cluster, "upgrade", "--install", RELEASE, str(REPO / "charts" / "kubeloop"),
         "--namespace", SYSTEM_NS, "--create-namespace", *chart_values(),
         "--wait", "--timeout", "300s")


def link_tree(source: Path, target: Path) -> None:
    """Hard links of `source`'s files under `target` (same disk; no copy of the data).
    The files stay root's and world-readable; the directories are made readable."""
    for root, _, files in os.walk(source):
        here = target / Path(root).relative_to(source)
        here.mkdir(parents=True, exist_ok=True)
        here.chmod(0o755)
        for name in files:
            os.link(Path(root) / name, here / name)


def run_once(cluster: Any, namespace: str, volume: Path, name: str, contender: str,
             rows: int) -> dict[str, Any]:
    from e2e.real.conftest import ON_REAL_NODE

    pods, cpu = CONTENDERS[contender]
    started = time.monotonic()
    cluster.create("BatchPrediction", namespace, name, {
        "model": {"uri": "pvc://models/model"},
        "input": {"uri": "pvc://models/data/", "passThrough": ["id"]},
        "output": {"uri": f"pvc://models/{name}/"},
        "parallelism": pods,
        "resources": {"cpu": cpu, "memory": "1Gi"},
        "scheduling": ON_REAL_NODE,
    })
    deadline = started + RUN_TIMEOUT_S
    while True:
        status = cluster.status("BatchPrediction", namespace, name)
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} ({contender}) not done in {RUN_TIMEOUT_S}s: {status}")
        time.sleep(0.5)  # a bench's poll, not a test's wait
    wall = time.monotonic() - started
    if status["phase"] != "Succeeded":
        raise SystemExit(f"{name} ({contender}) failed: {json.dumps(status)[:2000]}")
    written = (status.get("output") or {}).get("rows")
    if written != rows:
        raise SystemExit(f"{name} ({contender}) wrote {written} rows, the dataset has {rows}")
    result = {
        "contender": contender,
        "wall_s": round(wall, 2),
        "rows_per_second": round(rows / wall),
        "status_rows_per_second": (status.get("progress") or {}).get("rowsPerSecond"),
        "shards": len(status.get("shards") or []),
        "load_at_start": round(os.getloadavg()[0], 2),
    }
    print(f"{contender}: {rows} rows in {wall:.1f}s ({rows / wall:,.0f} rows/s)", file=sys.stderr)
    cluster.kubectl("delete", "batchprediction", name, "-n", namespace, "--wait=true")
    shutil.rmtree(volume / name, ignore_errors=True)
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from e2e.real.conftest import ModelVolume
    from tests.kubetest import Cluster

    commit = git_commit()  # what is measured: the tree at the start
    data_args = argparse.Namespace(rows=args.rows, files=args.files,
                                   row_group_rows=args.row_group_rows, cache=args.cache)
    dataset = generate(data_args)
    cluster = Cluster()
    try:
        install(cluster)
        namespace = cluster.new_namespace()
        volume = ModelVolume(cluster, namespace)
        try:
            link_tree(dataset / "data", volume.path / "data")
            link_tree(dataset / "model", volume.path / "model")
            runs = []
            for number, order in enumerate(round_orders(list(CONTENDERS), args.rounds)):
                for contender in order:
                    runs.append(run_once(cluster, namespace, volume.path,
                                         f"run-{number}-{contender}", contender, args.rows))
        finally:
            volume.delete()
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    finally:
        cluster.stop()
    results = {}
    for contender in CONTENDERS:
        mine = [r for r in runs if r["contender"] == contender]
        results[contender] = {
            "rows_per_second": round(statistics.median(r["rows_per_second"] for r in mine)),
            "wall_s": round(statistics.median(r["wall_s"] for r in mine), 2),
            "runs": mine,
        }
    base = results["1x1"]["rows_per_second"]
    for contender in CONTENDERS:
        results[contender]["speedup"] = round(results[contender]["rows_per_second"] / base, 2)
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "load_at_start": runs[0]["load_at_start"]},
        "rows": args.rows,
        "files": args.files,
        "row_group_rows": args.row_group_rows,
        "rounds": args.rounds,
        "model": "GradientBoostingClassifier(n_estimators=100), 3 classes (bench-batch's)",
        "results": results,
    }


def render(document: dict[str, Any]) -> str:
    commit = document["commit"]
    lines = [
        "## Batch scale-out on the real node",
        "",
        f"`make bench-batch-scaleout` at {commit['sha'][:7]}"
        f"{' (uncommitted changes)' if commit['dirty'] else ''}, {document['generated']}: "
        f"bench-batch's {document['rows']:,} rows x 20 features ({document['files']} Parquet "
        f"files, row groups of {document['row_group_rows']:,}) scored by a BatchPrediction "
        f"on the local cluster's real node ({document['machine']['cpus']} cores, shared "
        "with the control plane and the operator pod), pods of the kubeloop image started "
        f"by the operator's Job. Medians of {document['rounds']} rounds, the order "
        "alternating; each run timed from its create to Succeeded on the resource (pod "
        "start, scoring, the output finalized); every run's output has every row.",
        "",
        "| pods x scoring processes (CPU request) | rows/s | seconds | vs 1 pod, 1 process |",
        "|---|---:|---:|---:|",
    ]
    for contender, result in document["results"].items():
        lines.append(f"| {LABELS[contender]} | {result['rows_per_second']:,} | "
                     f"{result['wall_s']:.1f} | {result['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--row-group-rows", type=int, default=125_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    if args.render_only:
        document = json.loads(args.output.read_text())
    else:
        document = measure(args)
        args.output.write_text(json.dumps(document, indent=1) + "\n")
    write_readme(args.readme, f"{START}\n{render(document)}{END}", START, END)


if __name__ == "__main__":
    main()
