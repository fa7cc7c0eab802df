"""Drift statistics benchmark: Kubeloop vs Evidently vs plain per-feature SciPy.

One run generates a reference and a current table (fixed seed, drift injected into known
features), writes them once as .npy, then runs every contender in its own subprocess so
that each one's peak memory (ru_maxrss) is its own. Evidently runs under its own
interpreter (``--evidently-python``, see drift_bench.sh) so its dependencies never meet
ours. Results go to bench/results/drift-bench.json and a Markdown summary to stdout.

What is timed, with the data already in memory as NumPy arrays:

* kubeloop profile: ``build_profile`` on the reference (once, on its own);
* kubeloop report: ``counts_for`` (binning the current data onto the profile) plus
  ``compare`` for one method: what ``kubeloop drift PROFILE CURRENT`` does after reading;
* kubeloop exact: ``compare_raw`` (KS on raw samples, the reference profile given);
* scipy: one ``ks_2samp`` / ``wasserstein_distance`` call per feature;
* evidently: ``Dataset.from_pandas`` plus ``Report([DataDriftPreset(...)]).run``, from
  pandas DataFrames already built.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20240611
REPO = Path(__file__).resolve().parent.parent
BASES = ("normal", "lognormal", "uniform", "exponential", "poisson")
# feature index -> (kind, size); sizes are in reference standard deviations, or the
# share of rows moved for outliers. Indices avoid the Poisson (discrete) features.
DRIFT: dict[int, tuple[str, float]] = {
    0: ("shift", 0.5),
    1: ("shift", 0.2),
    2: ("scale", 1.3),
    3: ("outliers", 0.01),
    5: ("shift", 0.02),
    6: ("shift", 0.01),
    7: ("scale", 1.05),
    8: ("shift", 0.005),
}
THRESHOLDS = {"ks": 0.05, "psi": 0.2, "wasserstein": 0.1}
REPEATS = 3


def feature_names(count: int) -> list[str]:
    return [f"f{i:02d}_{BASES[i % len(BASES)]}" for i in range(count)]


def describe_drift(index: int) -> str:
    if index not in DRIFT:
        return "none"
    kind, size = DRIFT[index]
    return f"{kind} {size:g}" + (" std" if kind == "shift" else "")


def _base(rng: np.random.Generator, kind: str, rows: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=rows)
    if kind == "lognormal":
        return rng.lognormal(0.0, 0.5, size=rows)
    if kind == "uniform":
        return rng.uniform(size=rows)
    if kind == "exponential":
        return rng.exponential(size=rows)
    return rng.poisson(3.0, size=rows).astype(np.float64)


def generate(rows: int, features: int, directory: Path) -> None:
    """Reference and current tables as (features, rows) arrays, one row per feature."""
    rng = np.random.default_rng(SEED)
    reference = np.empty((features, rows))
    current = np.empty((features, rows))
    for i in range(features):
        kind = BASES[i % len(BASES)]
        reference[i] = _base(rng, kind, rows)
        current[i] = _base(rng, kind, rows)
        if i in DRIFT:
            change, size = DRIFT[i]
            std = reference[i].std()
            if change == "shift":
                current[i] += size * std
            elif change == "scale":
                mean = current[i].mean()
                current[i] = mean + (current[i] - mean) * size
            else:
                moved = rng.random(rows) < size
                current[i, moved] = reference[i].mean() + 6 * std
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "reference.npy", reference)
    np.save(directory / "current.npy", current)


# --- workers: each runs in its own process ------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, list[float]]:
    seconds = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def _kubeloop_profile(
    ref: np.ndarray, names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    from kubeloop.drift.profile import build_profile, save_profile

    columns = dict(zip(names, ref, strict=True))
    profile, seconds = _timed(lambda: build_profile(columns, bins=args.bins), REPEATS)
    save_profile(profile, args.data / "profile.json")
    return {"seconds_all": seconds, "bins": profile.max_bins}


def _kubeloop_report(cur: np.ndarray, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from kubeloop.drift.profile import counts_for, load_profile
    from kubeloop.drift.report import compare

    profile = load_profile(args.data / "profile.json")
    columns = dict(zip(names, cur, strict=True))
    report, seconds = _timed(
        lambda: compare(profile, counts_for(profile, columns), args.method), REPEATS
    )
    return {
        "seconds_all": seconds,
        "scores": [f.score for f in report.features],
        "p_values": [f.p_value for f in report.features],
        "drifted": [f.drifted for f in report.features],
    }


def _kubeloop_exact(
    ref: np.ndarray, cur: np.ndarray, names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    from kubeloop.drift.profile import load_profile
    from kubeloop.drift.report import compare_raw

    profile = load_profile(args.data / "profile.json")
    reference = dict(zip(names, ref, strict=True))
    current = dict(zip(names, cur, strict=True))
    report, seconds = _timed(lambda: compare_raw(profile, reference, current, args.method), 1)
    return {
        "seconds_all": seconds,
        "scores": [f.score for f in report.features],
        "p_values": [f.p_value for f in report.features],
        "drifted": [f.drifted for f in report.features],
    }


def _scipy(ref: np.ndarray, cur: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    from scipy import stats

    def run() -> list[tuple[float, float | None]]:
        if args.method == "ks":
            out = []
            for r, c in zip(ref, cur, strict=True):
                res = stats.ks_2samp(r, c, method="asymp")
                out.append((float(res.statistic), float(res.pvalue)))
            return out
        return [
            (float(stats.wasserstein_distance(r, c) / max(float(np.std(r)), 1e-3)), None)
            for r, c in zip(ref, cur, strict=True)
        ]

    results, seconds = _timed(run, 1)
    threshold = THRESHOLDS[args.method]
    return {
        "seconds_all": seconds,
        "scores": [s for s, _ in results],
        "p_values": [p for _, p in results],
        "drifted": [(p < threshold) if p is not None else (s >= threshold) for s, p in results],
    }


def _evidently(
    ref: np.ndarray, cur: np.ndarray, names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference = pd.DataFrame(dict(zip(names, ref, strict=True)))
    current = pd.DataFrame(dict(zip(names, cur, strict=True)))
    threshold = THRESHOLDS[args.method]

    def run() -> Any:
        definition = DataDefinition(numerical_columns=names)
        return Report([DataDriftPreset(method=args.method, threshold=threshold)]).run(
            current_data=Dataset.from_pandas(current, data_definition=definition),
            reference_data=Dataset.from_pandas(reference, data_definition=definition),
        )

    snapshot, seconds = _timed(run, 1)
    values = {
        m["config"]["column"]: float(m["value"])
        for m in snapshot.dict()["metrics"]
        if m["config"].get("type", "").endswith("ValueDrift")
    }
    scores = [values[n] for n in names]
    # Evidently's own rules: KS drifts when p <= threshold, distances when >= threshold.
    if args.method == "ks":
        return {
            "seconds_all": seconds,
            "scores": [None] * len(names),
            "p_values": scores,
            "drifted": [p <= threshold for p in scores],
        }
    return {
        "seconds_all": seconds,
        "scores": scores,
        "p_values": [None] * len(names),
        "drifted": [s >= threshold for s in scores],
    }


def worker(args: argparse.Namespace) -> None:
    names = feature_names(args.features)[: args.limit]
    ref = np.load(args.data / "reference.npy")[: args.limit]
    cur = np.load(args.data / "current.npy")[: args.limit]
    baseline = _rss_mb()
    if args.worker == "kubeloop-profile":
        result = _kubeloop_profile(ref, names, args)
    elif args.worker == "kubeloop-report":
        result = _kubeloop_report(cur, names, args)
    elif args.worker == "kubeloop-exact":
        result = _kubeloop_exact(ref, cur, names, args)
    elif args.worker == "scipy":
        result = _scipy(ref, cur, args)
    else:
        result = _evidently(ref, cur, names, args)
    result.update(
        features=names,
        rows=int(ref.shape[1]),
        seconds=statistics.median(result["seconds_all"]),
        data_rss_mb=baseline,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    print(json.dumps(result))


# --- orchestration ------------------------------------------------------------------


def run_worker(
    python: str, task: str, method: str, limit: int, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        task,
        "--method",
        method,
        "--limit",
        str(limit),
        "--rows",
        str(args.rows),
        "--features",
        str(args.features),
        "--bins",
        str(args.bins),
        "--data",
        str(args.data),
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO / "operator"))
    print(f"running {task} {method} on {limit} features", file=sys.stderr, flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{task} {method} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(contender=task, method=method)
    return result


def speedups(results: dict[str, Any]) -> list[str]:
    """Kubeloop against the others per method, Evidently scaled to all features where it
    ran on fewer (its cost is linear in the number of columns)."""
    runs = {(r["contender"], r["method"]): r for r in results["runs"]}
    build = runs[("kubeloop-profile", "-")]["seconds"]
    out = []
    for method in THRESHOLDS:
        ours = runs[("kubeloop-report", method)]["seconds"]
        for other in ("scipy", "evidently"):
            run = runs.get((other, method))
            if run is None:
                continue
            measured = len(run["features"])
            seconds = run["seconds"] * results["features"] / measured
            scaled = "" if measured == results["features"] else f" (scaled from {measured})"
            out.append(
                f"- {method}: {other} {seconds:.1f} s for {results['features']} features"
                f"{scaled}; Kubeloop's report is {seconds / ours:.0f}x faster, "
                f"{seconds / (ours + build):.0f}x counting the profile build too."
            )
    return out


def markdown(results: dict[str, Any]) -> str:
    runs = results["runs"]
    lines = [
        f"{results['rows']:,} reference rows vs {results['rows']:,} current rows, "
        f"{results['features']} numeric features; {results['machine']['cpus']} CPUs, "
        f"load average {results['machine']['load_before']} before the run.",
        "",
        "| contender | task | features | time (s) | per feature (ms) | peak RSS (MB) "
        "| RSS over data (MB) | drifted features |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        drifted = sum(run.get("drifted", [])) if "drifted" in run else "-"
        lines.append(
            f"| {run['contender']} | {run['method']} | {len(run['features'])} "
            f"| {run['seconds']:.3f} | {1000 * run['seconds'] / len(run['features']):.1f} "
            f"| {run['peak_rss_mb']:.0f} | {run['peak_rss_mb'] - run['data_rss_mb']:.0f} "
            f"| {drifted} |"
        )
    lines += ["", *speedups(results), ""]
    lines += ["Verdicts (D = drift) on the features with injected drift or disagreement:", ""]
    verdict_runs = [r for r in runs if "drifted" in r]
    header = ["feature", "injected"] + [f"{r['contender']} {r['method']}" for r in verdict_runs]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    names = feature_names(results["features"])
    agreeing = 0
    for index, name in enumerate(names):
        cells = []
        for run in verdict_runs:
            if index < len(run["drifted"]):
                cells.append("D" if run["drifted"][index] else ".")
            else:
                cells.append("n/a")
        measured = {c for c in cells if c != "n/a"}
        if index not in DRIFT and measured == {"."}:
            agreeing += 1
            continue
        lines.append(f"| {name} | {describe_drift(index)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"The other {agreeing} features (no drift injected): no drift in every run.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--evidently-python", help="interpreter with evidently installed")
    parser.add_argument(
        "--evidently-features",
        type=int,
        default=50,
        help="features for Evidently's KS run (its slowest part)",
    )
    parser.add_argument(
        "--evidently-secondary-features",
        type=int,
        default=10,
        help="features for Evidently's PSI and Wasserstein runs",
    )
    parser.add_argument("--data", type=Path, default=REPO / "bench" / "out" / "drift-data")
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench" / "results" / "drift-bench.json"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="ks", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    generate(args.rows, args.features, args.data)
    print(f"generated data in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    me = sys.executable
    everything = args.features
    runs = [run_worker(me, "kubeloop-profile", "-", everything, args)]
    for method in ("ks", "psi", "wasserstein"):
        runs.append(run_worker(me, "kubeloop-report", method, everything, args))
    runs.append(run_worker(me, "kubeloop-exact", "ks", everything, args))
    for method in ("ks", "wasserstein"):
        runs.append(run_worker(me, "scipy", method, everything, args))
    if args.evidently_python:
        runs.append(
            run_worker(args.evidently_python, "evidently", "ks", args.evidently_features, args)
        )
        for method in ("psi", "wasserstein"):
            runs.append(
                run_worker(
                    args.evidently_python,
                    "evidently",
                    method,
                    args.evidently_secondary_features,
                    args,
                )
            )
    results = {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "features": args.features,
        "bins": args.bins,
        "seed": SEED,
        "drift_injected": {
            name: describe_drift(i) for i, name in enumerate(feature_names(args.features))
        },
        "thresholds": THRESHOLDS,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "runs": [{k: v for k, v in r.items() if k != "bins"} for r in runs],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
