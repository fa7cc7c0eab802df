#!/usr/bin/env python3
"""Batch scoring: Kubeloop's scorer against scikit-learn's predict on in-memory arrays.

Generates a Parquet dataset once (N rows x 20 float64 features and an id, in files of
several row groups) into a cache directory outside the repository, trains a gradient-
boosting classifier (the example's estimator) on a sample and writes it as a model
directory, then measures, each in a fresh process, medians of --repeats runs:

- ``sklearn``: ``predict`` and ``predict_proba`` on the whole dataset as one float64
  array already in memory (reading not timed): the ceiling, one process;
- ``kubeloop-wN``: ``kubeloop batch``'s scorer (``kubeloop.batch.run.score``) with N
  worker processes over the same files, writing predictions, probabilities and the id
  as Parquet, manifests and all: I/O and loading the model included (the process's
  imports are not, as for the ceiling; worker processes' are).

Rows per second, and each contender's peak resident memory (its own, and its worker
processes' largest). Results: bench/results/batch.json (with the commit and the date).

    python bench/batch_bench.py [--rows 2000000] [--repeats 3] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "batch.json"
DEFAULT_CACHE = Path(os.environ.get("KUBELOOP_CACHE") or Path.home() / ".cache" / "kubeloop")
FEATURES = 20
SEED = 20241201


def dataset_dir(args: argparse.Namespace) -> Path:
    key = f"rows{args.rows}-f{FEATURES}-files{args.files}-rg{args.row_group_rows}-s{SEED}"
    return args.cache / "batch-bench" / key


def generate(args: argparse.Namespace) -> Path:
    """The dataset and the model, made once per key (written aside, then renamed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = dataset_dir(args)
    if (root / "done").is_file():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    weights = rng.normal(size=(FEATURES, 3))
    per_file = -(-args.rows // args.files)
    for i in range(args.files):
        n = min(per_file, args.rows - i * per_file)
        x = rng.normal(size=(n, FEATURES))
        columns = {"id": pa.array(np.arange(i * per_file, i * per_file + n))}
        columns |= {f"f{j:02d}": pa.array(x[:, j]) for j in range(FEATURES)}
        pq.write_table(
            pa.table(columns), tmp / "data" / f"part-{i:03d}.parquet",
            row_group_size=args.row_group_rows,
        )
    x = rng.normal(size=(20_000, FEATURES))
    y = np.argmax(x @ weights + rng.normal(scale=0.5, size=(20_000, 3)), axis=1)
    write_model(tmp / "model", x, y)
    (tmp / "done").write_text("")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def write_model(out: Path, x: np.ndarray, y: np.ndarray) -> None:
    """A model directory as examples/train/train.py writes one (its building blocks)."""
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier

    from kubeloop.modeldir import (
        METADATA_FILE,
        MODEL_FILE,
        ModelMetadata,
        TensorSpec,
        write_manifest,
    )

    estimator = GradientBoostingClassifier(n_estimators=100, random_state=0).fit(x, y)
    out.mkdir(parents=True)
    joblib.dump(estimator, out / MODEL_FILE)
    metadata = ModelMetadata(
        name="bench",
        version="1",
        framework="scikit-learn",
        inputs=[TensorSpec(name=f"f{j:02d}", datatype="FP64", shape=[-1]) for j in range(FEATURES)],
        outputs=[TensorSpec(name="predict", datatype="INT64", shape=[-1])],
        classes=["a", "b", "c"],
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    (out / METADATA_FILE).write_text(metadata.model_dump_json(indent=1) + "\n")
    write_manifest(out)


def peak_rss_mib() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "largest_worker": round(children, 1)}


def run_sklearn(root: Path) -> dict[str, Any]:
    import joblib
    import pyarrow.parquet as pq

    estimator = joblib.load(root / "model" / "model.joblib")
    table = pq.read_table(root / "data", columns=[f"f{j:02d}" for j in range(FEATURES)])
    x = np.column_stack([table.column(j).to_numpy() for j in range(FEATURES)])
    del table
    start = time.perf_counter()
    estimator.predict(x)
    estimator.predict_proba(x)
    return {"seconds": time.perf_counter() - start, "rows": len(x)}


def run_kubeloop(root: Path, workers: int, scratch: Path) -> dict[str, Any]:
    # Process start-up is not timed, as for the ceiling: the libraries imported first.
    import sklearn.ensemble  # noqa: F401

    from kubeloop.batch.features import OutputSpec
    from kubeloop.batch.run import Request, score

    out = scratch / f"out-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    request = Request(
        model_dir=str(root / "model"),
        input=str(root / "data"),
        output=str(out),
        spec=OutputSpec(passthrough=("id",)),
    )
    start = time.perf_counter()
    summary = score(request, 0, 1, workers)
    seconds = time.perf_counter() - start
    assert summary["output"]["rows"] == summary["rowsScored"], summary
    shutil.rmtree(out)
    return {"seconds": seconds, "rows": summary["rowsScored"]}


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; JSON on stdout."""
    os.environ.setdefault("KUBELOOP_PROGRESS_PORT", "0")
    root = dataset_dir(args)
    if args.child == "sklearn":
        result = run_sklearn(root)
    else:
        result = run_kubeloop(root, int(args.child.split("-w")[1]), args.cache / "batch-bench")
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def run_once(args: argparse.Namespace, contender: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", contender, *passed_through(args)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    load = os.getloadavg()[0]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{contender} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_at_start"] = round(load, 2)
    print(f"{contender:12s} {result['rows'] / result['seconds']:12,.0f} rows/s  load {load:.2f}")
    return result


def measure(args: argparse.Namespace, contenders: list[str]) -> dict[str, Any]:
    """Rounds alternate the contenders, so a change in the machine's load falls on all."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name in contenders:
            runs[name].append(run_once(args, name))
    results = {}
    for name, done in runs.items():
        rates = [r["rows"] / r["seconds"] for r in done]
        results[name] = {
            "rows_per_second": round(statistics.median(rates)),
            "runs_rows_per_second": [round(r) for r in rates],
            "load_at_start": [r["load_at_start"] for r in done],
            "peak_rss_mib": max(
                (r["peak_rss_mib"] for r in done), key=lambda m: m["self"] + m["largest_worker"]
            ),
        }
    return results


def passed_through(args: argparse.Namespace) -> list[str]:
    return [
        "--rows", str(args.rows), "--files", str(args.files),
        "--row-group-rows", str(args.row_group_rows), "--cache", str(args.cache),
    ]


def git_commit() -> dict[str, Any]:
    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True
        ).stdout

    # Tracked files only: an untracked link to the virtualenv changes nothing measured.
    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {"sha": git("rev-parse", "HEAD").strip(), "dirty": any(changed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="default 2M (up to 10M)")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--row-group-rows", type=int, default=125_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="e.g. 1,2")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="dataset cache ($KUBELOOP_CACHE)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "operator"))
    if args.child:
        child(args)
        return
    started = dt.datetime.now(dt.UTC)
    generate(args)
    contenders = ["sklearn"] + [f"kubeloop-w{w}" for w in dict.fromkeys(args.workers.split(","))]
    results = measure(args, contenders)
    ceiling = results["sklearn"]["rows_per_second"]
    for result in results.values():
        result["fraction_of_ceiling"] = round(result["rows_per_second"] / ceiling, 3)
    document = {
        "generated": started.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()[0]},
        "rows": args.rows,
        "features": FEATURES,
        "files": args.files,
        "row_group_rows": args.row_group_rows,
        "model": "GradientBoostingClassifier(n_estimators=100), 3 classes",
        "outputs": "id, prediction, 3 class probabilities (Parquet)",
        "repeats": args.repeats,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
