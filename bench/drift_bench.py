"""Drift statistics benchmark: Kubeloop vs plain per-feature SciPy vs Evidently.

One run generates a reference and a current table (fixed seed, drift injected into known
features), writes them once as .npy, then runs every contender in its own subprocess so
that each one's peak memory (ru_maxrss) is its own. Evidently runs under its own
interpreter (``--evidently-python``, see drift_bench.sh) so its dependencies never meet
ours. Every contender runs on all features and is timed the same way: REPEATS timed
repetitions in its process, the median reported, every repetition kept.

What is timed, with the data already in memory as NumPy arrays:

* kubeloop exact: ``compare_raw`` (KS or Wasserstein on the raw samples, the reference
  profile given), what ``kubeloop drift --exact`` does after reading;
* scipy: one ``ks_2samp`` / ``wasserstein_distance`` call per feature;
* evidently: ``Dataset.from_pandas`` plus ``Report([DataDriftPreset(...)]).run``, from
  pandas DataFrames already built (ks, psi and wasserstein);
* kubeloop profile: ``build_profile`` on the reference, on its own;
* kubeloop report: ``counts_for`` (binning the current data onto the profile) plus
  ``compare`` for one method: what ``kubeloop drift PROFILE CURRENT`` does after reading.

Results go to bench/results/drift-bench.json; the "Drift statistics" section of
bench/README.md (between the drift-bench markers) is rendered from that file alone
(``--render-only`` re-renders it without running anything) and printed.
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20240611
REPO = Path(__file__).resolve().parent.parent
README = REPO / "bench" / "README.md"
START_MARKER = "<!-- drift-bench:start -->"
END_MARKER = "<!-- drift-bench:end -->"
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
# Outliers are moved to the reference mean plus this many reference standard deviations.
OUTLIER_STDS = 6.0
THRESHOLDS = {"ks": 0.05, "psi": 0.2, "wasserstein": 0.1}
RAW_METHODS = ("ks", "wasserstein")
REPEATS = 3
# The Wasserstein distance is divided by the reference's population standard deviation
# floored at this, as Kubeloop (stats.WASSERSTEIN_STD_FLOOR) and Evidently both do.
WASSERSTEIN_STD_FLOOR = 1e-3
# Kubeloop's documented bound on |its KS p-value - SciPy's|: KS_P_BOUND / en (stats.py).
KS_P_BOUND = 0.03
# KS p-values below this count as "the tail" where the text compares them relatively.
TAIL_P = 1e-3
# The goals the benchmark checks (from the project's issue tracker).
TARGETS = {"profile_build_s": 3.0, "report_s": 1.5, "speedup_vs_evidently": 50.0}
# A 1-minute load average below this before the run counts as an idle machine.
IDLE_LOAD = 0.5


def feature_names(count: int) -> list[str]:
    return [f"f{i:02d}_{BASES[i % len(BASES)]}" for i in range(count)]


def describe_drift(index: int) -> str:
    if index not in DRIFT:
        return "none"
    kind, size = DRIFT[index]
    if kind == "shift":
        return f"shift {size:g} std"
    if kind == "outliers":
        return f"{size:.0%} outliers at +{OUTLIER_STDS:g} std"
    return f"{kind} {size:g}"


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


def generate(rows: int, features: int, directory: Path) -> dict[str, Any]:
    """Reference and current tables as (features, rows) arrays, one row per feature.

    Returns facts about the data that the rendered text quotes: per feature, the share
    of current values outside the reference's [minimum, maximum].
    """
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
                current[i, moved] = reference[i].mean() + OUTLIER_STDS * std
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "reference.npy", reference)
    np.save(directory / "current.npy", current)
    low = reference.min(axis=1, keepdims=True)
    high = reference.max(axis=1, keepdims=True)
    outside = ((current < low) | (current > high)).mean(axis=1)
    return {
        "bytes": int(reference.nbytes + current.nbytes),
        "outside_reference_range": [float(x) for x in outside],
    }


# --- workers: each runs in its own process ------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, dict[str, list[float]]]:
    """``fn`` run ``repeats`` times: its last result, every run's wall-clock and CPU
    seconds (CPU of the whole process, every thread), and the peak RSS so far (taken
    before any bookkeeping after the timed runs)."""
    wall: list[float] = []
    cpu: list[float] = []
    result = None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result, {"seconds_all": wall, "cpu_seconds_all": cpu, "peak_rss_mb": peak}


def _kubeloop_threads() -> int | None:
    from kubeloop.drift import profile

    workers = getattr(profile, "_workers", None)
    return int(workers()) if workers else None


def _kubeloop_profile(
    ref: np.ndarray, names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    from kubeloop.drift.profile import build_profile, save_profile

    columns = dict(zip(names, ref, strict=True))
    profile, timing = _timed(lambda: build_profile(columns, bins=args.bins), REPEATS)
    save_profile(profile, args.data / "profile.json")
    return {**timing, "threads": _kubeloop_threads(), "max_bins": profile.max_bins}


def _report_fields(report: Any) -> dict[str, Any]:
    return {
        "scores": [f.score for f in report.features],
        "p_values": [f.p_value for f in report.features],
        "drifted": [f.drifted for f in report.features],
    }


def _kubeloop_report(cur: np.ndarray, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from kubeloop.drift.profile import counts_for, load_profile
    from kubeloop.drift.report import compare

    profile = load_profile(args.data / "profile.json")
    columns = dict(zip(names, cur, strict=True))
    threshold = THRESHOLDS[args.method]
    report, timing = _timed(
        # Per feature, uncorrected: the contenders (SciPy, Evidently) test each alone.
        lambda: compare(
            profile, counts_for(profile, columns), args.method, threshold, correction="none"
        ),
        REPEATS,
    )
    return {**timing, **_report_fields(report), "threads": _kubeloop_threads()}


def _kubeloop_exact(
    ref: np.ndarray, cur: np.ndarray, names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    from kubeloop.drift.profile import load_profile
    from kubeloop.drift.report import compare_raw

    profile = load_profile(args.data / "profile.json")
    reference = dict(zip(names, ref, strict=True))
    current = dict(zip(names, cur, strict=True))
    threshold = THRESHOLDS[args.method]
    report, timing = _timed(
        lambda: compare_raw(
            profile, reference, current, args.method, threshold, correction="none"
        ),
        REPEATS,
    )
    return {**timing, **_report_fields(report), "threads": _kubeloop_threads()}


def _scipy(ref: np.ndarray, cur: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    from scipy import stats

    def run() -> list[tuple[float, float | None]]:
        if args.method == "ks":
            out: list[tuple[float, float | None]] = []
            for r, c in zip(ref, cur, strict=True):
                res = stats.ks_2samp(r, c, method="asymp")
                out.append((float(res.statistic), float(res.pvalue)))
            return out
        # The quantity Kubeloop (wasserstein_raw) and Evidently (wasserstein_distance_norm)
        # report: the distance over the reference's population std (ddof 0), floored.
        return [
            (
                float(
                    stats.wasserstein_distance(r, c) / max(float(np.std(r)), WASSERSTEIN_STD_FLOOR)
                ),
                None,
            )
            for r, c in zip(ref, cur, strict=True)
        ]

    results, timing = _timed(run, REPEATS)
    threshold = THRESHOLDS[args.method]
    return {
        **timing,
        "scores": [s for s, _ in results],
        "p_values": [p for _, p in results],
        "drifted": [(p < threshold) if p is not None else (s >= threshold) for s, p in results],
    }


def _evidently_bins(reference: Any, current: Any, names: list[str]) -> list[int]:
    """How many bins Evidently's PSI used per feature, from its own binning function
    (outside the timed runs)."""
    from evidently.legacy.calculations.stattests.utils import get_binned_data
    from evidently.legacy.core import ColumnType

    return [
        len(get_binned_data(reference[n], current[n], ColumnType.Numerical, 30)[0]) for n in names
    ]


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

    snapshot, timing = _timed(run, REPEATS)
    values = {
        m["config"]["column"]: float(m["value"])
        for m in snapshot.dict()["metrics"]
        if m["config"].get("type", "").endswith("ValueDrift")
    }
    scores = [values[n] for n in names]
    # Evidently's own rules: KS drifts when p <= threshold, distances when >= threshold.
    if args.method == "ks":
        return {
            **timing,
            "scores": [None] * len(names),
            "p_values": scores,
            "drifted": [p <= threshold for p in scores],
        }
    result = {
        **timing,
        "scores": scores,
        "p_values": [None] * len(names),
        "drifted": [s >= threshold for s in scores],
    }
    if args.method == "psi":
        result["bins_per_feature"] = _evidently_bins(reference, current, names)
    return result


def _versions() -> dict[str, Any]:
    from importlib import metadata

    found: dict[str, Any] = {"python": platform.python_version()}
    for package in ("numpy", "scipy", "pandas", "evidently"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    try:
        from kubeloop.drift import stats
    except ImportError:
        return found
    # Kubeloop's own constants, quoted in the rendered text.
    found["kubeloop_constants"] = {
        "psi_epsilon": stats.PSI_EPSILON,
        "wasserstein_std_floor": stats.WASSERSTEIN_STD_FLOOR,
    }
    return found


def worker(args: argparse.Namespace) -> None:
    if args.worker == "versions":
        print(json.dumps(_versions()))
        return
    names = feature_names(args.features)
    ref = np.load(args.data / "reference.npy")
    cur = np.load(args.data / "current.npy")
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
    )
    print(json.dumps(result))


# --- orchestration ------------------------------------------------------------------


def _environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "operator"))


def run_worker(python: str, task: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        task,
        "--method",
        method,
        "--rows",
        str(args.rows),
        "--features",
        str(args.features),
        "--bins",
        str(args.bins),
        "--data",
        str(args.data),
    ]
    print(f"running {task} {method} on {args.features} features", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    done = subprocess.run(command, env=_environment(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{task} {method} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(contender=task, method=method, load_at_start=round(load, 2))
    return result


def versions_of(python: str) -> dict[str, Any]:
    done = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", "versions"],
        env=_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    if load_before[0] >= IDLE_LOAD:
        print(
            f"warning: load average {load_before[0]:.2f}: the machine is not idle, the "
            "timings will be noisy",
            file=sys.stderr,
        )
    started = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    data = generate(args.rows, args.features, args.data)
    print(f"generated data in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    me = sys.executable
    versions = {"kubeloop": versions_of(me)}
    runs = [run_worker(me, "kubeloop-profile", "-", args)]
    for method in THRESHOLDS:
        runs.append(run_worker(me, "kubeloop-report", method, args))
    for method in RAW_METHODS:
        runs.append(run_worker(me, "kubeloop-exact", method, args))
    for method in RAW_METHODS:
        runs.append(run_worker(me, "scipy", method, args))
    if args.evidently_python:
        versions["evidently"] = versions_of(args.evidently_python)
        for method in THRESHOLDS:
            runs.append(run_worker(args.evidently_python, "evidently", method, args))
    load_after = os.getloadavg()
    return {
        "generated": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "rows": args.rows,
        "features": args.features,
        "bins": args.bins,
        "seed": SEED,
        "repeats": REPEATS,
        "bases": list(BASES),
        "drift_injected": {
            name: describe_drift(i) for i, name in enumerate(feature_names(args.features))
        },
        "thresholds": THRESHOLDS,
        "targets": TARGETS,
        "idle_load": IDLE_LOAD,
        "wasserstein_std_floor": WASSERSTEIN_STD_FLOOR,
        "ks_p_bound": KS_P_BOUND,
        "tail_p": TAIL_P,
        "data": data,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "cpu_model": cpu_model(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
            "platform": platform.platform(),
        },
        "versions": versions,
        "runs": runs,
    }


# --- rendering: every number below comes from the results dict ------------------------


def _index(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["contender"], r["method"]): r for r in results["runs"]}


def median_s(run: dict[str, Any]) -> float:
    return float(statistics.median(run["seconds_all"]))


def per_feature_ms(run: dict[str, Any]) -> float:
    return 1000 * median_s(run) / len(run["features"])


def cpu_per_wall(run: dict[str, Any]) -> float | None:
    cpu = run.get("cpu_seconds_all")
    if not cpu or sum(run["seconds_all"]) <= 0:
        return None
    return float(sum(cpu) / sum(run["seconds_all"]))


def over_data_mb(run: dict[str, Any]) -> float:
    return float(run["peak_rss_mb"] - run["data_rss_mb"])


def drifted_count(run: dict[str, Any]) -> int:
    return sum(bool(d) for d in run["drifted"])


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 100 else f"{seconds:.1f}"


def fmt_ratio(ratio: float) -> str:
    if ratio < 10:
        return f"{ratio:.2f}x"
    if ratio < 100:
        return f"{ratio:.1f}x"
    return f"{ratio:,.0f}x"


def fmt_mb(mb: float) -> str:
    return f"{mb:,.0f}"


def fmt_value(value: float) -> str:
    return f"{value:.3g}"


def fmt_p(value: float) -> str:
    return f"{value:.2g}"


def fmt_load(load: Iterable[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def _runs_cell(run: dict[str, Any]) -> str:
    return " / ".join(fmt_s(s) for s in run["seconds_all"])


def _cpu_cell(run: dict[str, Any]) -> str:
    ratio = cpu_per_wall(run)
    return "-" if ratio is None else f"{ratio:.2f}"


def _short(name: str) -> str:
    return name.split("_", 1)[0]


def _names(indices: Iterable[int], names: list[str]) -> str:
    listed = [_short(names[i]) for i in indices]
    return ", ".join(listed) if listed else "none"


def _verdict_label(contender: str, method: str) -> str:
    labels = {
        "kubeloop-report": f"Kubeloop {method} (binned)" if method != "psi" else "Kubeloop psi",
        "kubeloop-exact": f"Kubeloop {method} exact",
        "scipy": f"SciPy {method}",
        "evidently": f"Evidently {method}",
    }
    return labels[contender]


def _intro(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    rows, features = results["rows"], results["features"]
    injected = [n for n, d in results["drift_injected"].items() if d != "none"]
    thresholds = results["thresholds"]
    repeats = results["repeats"]
    bases = results["bases"]
    versions = results["versions"]
    ours = versions.get("kubeloop", {})
    theirs = versions.get("evidently")
    data_mb = results["data"]["bytes"] / 2**20
    load_before, load_after = machine["load_before"], machine["load_after"]
    lines = [
        "## Drift statistics",
        "",
        "`bench/drift_bench.sh` (what `make bench-drift` runs) creates Evidently's own "
        "virtualenv on first use (`~/.cache/kubeloop/venv-evidently`; it never touches the "
        "project's `.venv`) and runs `bench/drift_bench.py`, which:",
        "",
        f"- generates a {rows:,}-row reference and a {rows:,}-row current table of "
        f"{features} numeric features (seed {results['seed']}; "
        f"{', '.join(bases[:-1])} and {bases[-1]} columns) with drift injected into "
        f"{len(injected)} known features, and saves both once as `.npy`;",
        "- runs every contender in its own subprocess on the same arrays and on all "
        f"{features} features, so that each peak RSS (`ru_maxrss`) is its own; Evidently "
        "runs under its own interpreter;",
        f"- times every contender the same way: {repeats} timed runs in its process, the "
        "median reported (every run's seconds are in the results file);",
        "- writes every timing, score, p-value and verdict to "
        "`bench/results/drift-bench.json` and renders this section from that file alone "
        "(`python bench/drift_bench.py --render-only` re-renders it without running "
        "anything).",
        "",
        "What is timed, with the data already in memory:",
        "",
        "- **Kubeloop exact** = `compare_raw` on the raw samples (`kubeloop drift --exact`): "
        "the exact two-sample KS statistic with its asymptotic p-value, or the Wasserstein "
        "distance; given the reference profile, on which it bins the current data for the "
        "sample counts;",
        '- **SciPy** = one `ks_2samp(method="asymp")` or `wasserstein_distance` call per feature;',
        "- **Evidently** = `Dataset.from_pandas` + "
        "`Report([DataDriftPreset(method=..., threshold=...)]).run` from DataFrames already "
        "built;",
        f"- **Kubeloop profile build** = `build_profile` of the reference ({results['bins']} "
        "quantile bins per feature), once per reference (per model);",
        "- **Kubeloop report** = `counts_for` (binning the current values onto the profile, "
        "which the model server's drift histograms do as requests arrive) + `compare` (what a "
        "DriftMonitor runs on the scraped counts each interval): together what "
        "`kubeloop drift PROFILE CURRENT` does after reading the file.",
        "",
        f"Same rule everywhere: KS drifts at p < {thresholds['ks']:g} (Evidently: "
        f"p <= {thresholds['ks']:g}), PSI at >= {thresholds['psi']:g}, Wasserstein at >= "
        f"{thresholds['wasserstein']:g}. The Wasserstein distance is divided by the "
        "reference's population standard deviation (floored at "
        f"{results['wasserstein_std_floor']:g}) by all three: Kubeloop's `wasserstein_raw`, "
        "the SciPy worker and Evidently's `wasserstein_distance_norm` report the same "
        "quantity.",
        "",
    ]
    version_line = (
        f"Python {ours.get('python')}, NumPy {ours.get('numpy')}, SciPy {ours.get('scipy')}"
    )
    if theirs:
        version_line += (
            f"; Evidently {theirs.get('evidently')} with pandas {theirs.get('pandas')}, "
            f"NumPy {theirs.get('numpy')}, SciPy {theirs.get('scipy')} (Python "
            f"{theirs.get('python')}) in its own virtualenv"
        )
    else:
        version_line += "; Evidently was not run"
    idle = load_before[0] < results["idle_load"]
    threads = {
        r.get("threads") for r in results["runs"] if r["contender"].startswith("kubeloop")
    } - {None}
    lines += [
        f"Run {results['generated']} on {machine['cpus']} CPUs ({machine['cpu_model']}); "
        f"load averages {fmt_load(load_before)} before the run and "
        f"{fmt_load(load_after)} after it (which includes the benchmark's own work); the "
        f"whole run took {results['wall_seconds']:,.0f} s. {version_line}.",
        "",
    ]
    if idle:
        lines.append(
            f"The machine was idle before the run (load average {load_before[0]:.2f} over "
            "the last minute, "
            f"below {results['idle_load']:g})."
        )
    else:
        lines.append(
            f"**The machine was not idle** before the run (load average "
            f"{load_before[0]:.2f} over the last minute, not below {results['idle_load']:g}): "
            "other work shared the CPUs, so the timings are noisy; rerun on an idle machine."
        )
    lines[-1] += (
        f" Peak RSS includes the {data_mb:,.0f} MiB of data each worker loads (both tables "
        'as float64); "over data" is what the work added. CPU / wall is the process\'s CPU '
        "time (all threads) over wall time"
    )
    if threads:
        pool = ", ".join(str(t) for t in sorted(threads))
        lines[-1] += f"; Kubeloop bins and profiles with a pool of {pool} threads."
    else:
        lines[-1] += "."
    lines.append("")
    return lines


HEADLINE_HEADER = [
    "| method | contender | time (s) | runs (s) | per feature (ms) | time vs Kubeloop exact "
    "| CPU / wall | peak RSS (MB) | RSS over data (MB) | over data vs Kubeloop exact "
    "| drifted features |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]


def _headline(results: dict[str, Any]) -> list[str]:
    runs = _index(results)
    lines = [
        "### Raw samples: KS and Wasserstein, like for like",
        "",
        f"All {results['features']} features for every contender; time is the median of "
        f"{results['repeats']} runs.",
        "",
        *HEADLINE_HEADER,
    ]
    labels = {"kubeloop-exact": "Kubeloop exact", "scipy": "SciPy", "evidently": "Evidently"}
    for method in RAW_METHODS:
        base = runs.get(("kubeloop-exact", method))
        for contender, label in labels.items():
            run = runs.get((contender, method))
            if run is None:
                lines.append(f"| {method} | {label} | not run | | | | | | | | |")
                continue
            ratio = fmt_ratio(median_s(run) / median_s(base)) if base else "-"
            memory = (
                fmt_ratio(over_data_mb(run) / over_data_mb(base))
                if base and over_data_mb(base) > 0
                else "-"
            )
            lines.append(
                f"| {method} | {label} | {fmt_s(median_s(run))} | {_runs_cell(run)} "
                f"| {per_feature_ms(run):,.1f} | {ratio} | {_cpu_cell(run)} "
                f"| {fmt_mb(run['peak_rss_mb'])} | {fmt_mb(over_data_mb(run))} | {memory} "
                f"| {drifted_count(run)} |"
            )
    build = runs.get(("kubeloop-profile", "-"))
    exact = runs.get(("kubeloop-exact", "ks"))
    if build and exact:
        lines += [
            "",
            f"Kubeloop exact is given the reference profile; building it takes "
            f"{fmt_s(median_s(build))} s more (below), "
            f"{median_s(build) / median_s(exact):.0%} of the exact KS time.",
        ]
    return [*lines, ""]


def _profile_table(results: dict[str, Any]) -> list[str]:
    runs = _index(results)
    lines = [
        "### Profile-based check: what a DriftMonitor does each interval",
        "",
        "The reference is profiled once (per model); each check bins the current values "
        "onto the profile and compares the counts. Binned KS and Wasserstein are not the "
        "raw-sample statistics above (see below for how they differ).",
        "",
        "| task | time (s) | runs (s) | per feature (ms) | CPU / wall | peak RSS (MB) "
        "| RSS over data (MB) | drifted features |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    tasks = [(("kubeloop-profile", "-"), "profile build (once per reference)")]
    tasks += [
        (("kubeloop-report", m), f"report, {m}" + (" (binned)" if m in RAW_METHODS else ""))
        for m in THRESHOLDS
    ]
    for key, label in tasks:
        run = runs.get(key)
        if run is None:
            continue
        drifted = str(drifted_count(run)) if "drifted" in run else "-"
        lines.append(
            f"| {label} | {fmt_s(median_s(run))} | {_runs_cell(run)} "
            f"| {per_feature_ms(run):,.1f} | {_cpu_cell(run)} | {fmt_mb(run['peak_rss_mb'])} "
            f"| {fmt_mb(over_data_mb(run))} | {drifted} |"
        )
    return [*lines, ""]


def _evidently_bins_text(run: dict[str, Any], names: list[str]) -> str:
    bins = run.get("bins_per_feature") or []
    if not bins:
        return "its own bins"
    groups: dict[int, list[int]] = {}
    for index, count in enumerate(bins):
        groups.setdefault(count, []).append(index)
    common = max(groups, key=lambda b: len(groups[b]))
    text = f"{common} bins"
    others = sorted(b for b in groups if b != common)
    if others:
        rest = "; ".join(f"{b} on {_names(groups[b], names)}" for b in others)
        text += f" ({rest})"
    return text


def _psi_table(results: dict[str, Any]) -> list[str]:
    runs = _index(results)
    ours = runs.get(("kubeloop-report", "psi"))
    theirs = runs.get(("evidently", "psi"))
    if ours is None or theirs is None:
        return []
    names = feature_names(results["features"])
    bins = results["bins"]
    evidently_bins = _evidently_bins_text(theirs, names)
    lines = [
        "### PSI: different binning",
        "",
        "PSI has no raw-sample form and the two tools bin differently, so their values "
        f"differ: Kubeloop uses the reference's {bins} quantile bins plus two outer bins "
        "(values beyond the reference's minimum and maximum); Evidently bins reference and "
        "current together into equal-width bins (NumPy's Sturges rule on "
        f"{2 * results['rows']:,} values; one bin per value where a feature has few "
        f"distinct values): {evidently_bins}. The times compare each tool's whole "
        "PSI check.",
        "",
        "| contender | binning | time (s) | runs (s) | per feature (ms) "
        "| time vs Kubeloop report | peak RSS (MB) | RSS over data (MB) | drifted features |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, binning, run in (
        ("Kubeloop report, psi", f"reference quantiles ({bins} bins) plus outer bins", ours),
        ("Evidently psi", "equal-width over reference + current", theirs),
    ):
        lines.append(
            f"| {label} | {binning} | {fmt_s(median_s(run))} | {_runs_cell(run)} "
            f"| {per_feature_ms(run):,.1f} | {fmt_ratio(median_s(run) / median_s(ours))} "
            f"| {fmt_mb(run['peak_rss_mb'])} | {fmt_mb(over_data_mb(run))} "
            f"| {drifted_count(run)} |"
        )
    return [*lines, ""]


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _targets(results: dict[str, Any]) -> list[str]:
    runs = _index(results)
    targets = results["targets"]
    cpus = results["machine"]["cpus"]
    lines = [f"Targets (on {cpus} CPUs; times are medians):", ""]
    build = runs.get(("kubeloop-profile", "-"))
    if build:
        seconds = median_s(build)
        limit = targets["profile_build_s"]
        lines.append(
            f"- profile build < {limit:g} s: {fmt_s(seconds)} s: **{_met(seconds < limit)}**."
        )
    reports = [
        (m, runs[("kubeloop-report", m)]) for m in THRESHOLDS if ("kubeloop-report", m) in runs
    ]
    if reports:
        limit = targets["report_s"]
        worst = max(median_s(r) for _, r in reports)
        each = ", ".join(f"{m} {fmt_s(median_s(r))} s" for m, r in reports)
        lines.append(
            f"- drift report for {results['features']} features < {limit:g} s: {each}: "
            f"**{_met(worst < limit)}**."
        )
    factor = targets["speedup_vs_evidently"]
    evidently = runs.get(("evidently", "ks"))
    pairs = [
        ("raw-sample KS (Kubeloop exact vs Evidently KS)", runs.get(("kubeloop-exact", "ks"))),
        (
            "profile-based check (Kubeloop report, ks, vs Evidently KS)",
            runs.get(("kubeloop-report", "ks")),
        ),
    ]
    for label, ours in pairs:
        if ours is None:
            continue
        if evidently is None:
            lines.append(
                f"- Kubeloop at least {factor:g}x faster than Evidently, {label}: "
                "**not measured** (Evidently was not run)."
            )
            continue
        speedup = median_s(evidently) / median_s(ours)
        line = (
            f"- Kubeloop at least {factor:g}x faster than Evidently, {label}: "
            f"{fmt_s(median_s(evidently))} s vs {fmt_s(median_s(ours))} s = "
            f"**{fmt_ratio(speedup)}: {_met(speedup >= factor)}**"
        )
        if ours["contender"] == "kubeloop-report" and build:
            total = median_s(ours) + median_s(build)
            line += (
                f"; counting the profile build too ({fmt_s(total)} s), "
                f"{fmt_ratio(median_s(evidently) / total)}"
            )
        lines.append(line + ".")
    return [*lines, ""]


def _verdicts(results: dict[str, Any]) -> list[str]:
    runs = _index(results)
    names = feature_names(results["features"])
    order = [
        ("kubeloop-report", "ks"),
        ("kubeloop-exact", "ks"),
        ("scipy", "ks"),
        ("evidently", "ks"),
        ("kubeloop-report", "psi"),
        ("evidently", "psi"),
        ("kubeloop-report", "wasserstein"),
        ("kubeloop-exact", "wasserstein"),
        ("scipy", "wasserstein"),
        ("evidently", "wasserstein"),
    ]
    columns = [(key, runs[key]) for key in order if key in runs]
    injected = results["drift_injected"]
    shown, quiet = [], []
    for index, name in enumerate(names):
        if injected.get(name, "none") != "none" or any(r["drifted"][index] for _, r in columns):
            shown.append(index)
        else:
            quiet.append(index)
    header = ["feature", "injected"] + [_verdict_label(*key) for key, _ in columns]
    lines = [
        "### Verdicts",
        "",
        "D = drift. Every feature with injected drift, and every feature any run flagged:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for index in shown:
        cells = ["D" if r["drifted"][index] else "." for _, r in columns]
        lines.append(
            f"| {names[index]} | {injected.get(names[index], 'none')} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        f"The other {len(quiet)} features (no drift injected) got no drift from all "
        f"{len(columns)} runs.",
        "",
    ]
    return lines


def _max_abs_diff(a: list[float | None], b: list[float | None]) -> float:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return max((abs(x - y) for x, y in pairs), default=0.0)


def _max_rel_diff(a: list[float | None], b: list[float | None]) -> tuple[float, int | None]:
    best, where = 0.0, None
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x is None or y is None or y == 0:
            continue
        rel = abs(x - y) / abs(y)
        if rel > best:
            best, where = rel, i
    return best, where


def _equal_text(difference: float) -> str:
    return "exactly" if difference == 0 else f"to within {difference:.1g}"


def _ks_bullet(results: dict[str, Any]) -> list[str]:
    runs = _index(results)
    binned = runs.get(("kubeloop-report", "ks"))
    exact = runs.get(("kubeloop-exact", "ks"))
    if binned is None or exact is None:
        return []
    names = feature_names(results["features"])
    injected = [i for i, n in enumerate(names) if results["drift_injected"][n] != "none"]
    differ = [i for i in range(len(names)) if binned["drifted"][i] != exact["drifted"][i]]
    missed = [i for i in injected if exact["drifted"][i] and not binned["drifted"][i]]
    larger = [i for i in range(len(names)) if binned["scores"][i] > exact["scores"][i] + 1e-12]
    head = (
        f"same verdicts on all {len(names)} features"
        if not differ
        else f"{len(differ)} different verdicts ({_names(differ, names)})"
    )
    text = (
        f"- **KS, binned vs raw: {head}.** The binned statistic is the raw one evaluated "
        "only at the profile's bin edges, so it is never larger"
    )
    text += (
        f" (here: smaller or equal on all {len(names)} features"
        if not larger
        else f" (yet larger here on {_names(larger, names)}"
    )
    if injected:
        weakest = min(injected, key=lambda i: exact["scores"][i])
        text += (
            f"; weakest injected drift, {_short(names[weakest])}: D = "
            f"{binned['scores'][weakest]:.2g} binned vs {exact['scores'][weakest]:.2g} raw, "
            f"p = {fmt_p(binned['p_values'][weakest])} vs {fmt_p(exact['p_values'][weakest])}"
        )
    text += "). A shift that hides inside one bin would be missed; with quantile bins a "
    text += "shift moves mass across every edge"
    text += (
        ", and binning missed no injected drift here."
        if not missed
        else f"; binning missed {_names(missed, names)} here."
    )
    scipy = runs.get(("scipy", "ks"))
    if scipy is not None:
        statistic = _max_abs_diff(exact["scores"], scipy["scores"])
        p_diff = _max_abs_diff(exact["p_values"], scipy["p_values"])
        rows = results["rows"]
        en = round(rows * rows / (rows + rows))
        bound = results["ks_p_bound"] / en
        text += (
            f" On the raw samples Kubeloop's statistic equals SciPy's {_equal_text(statistic)}"
            f" and its p-values are within {p_diff:.1g} of SciPy's (documented bound "
            f"{results['ks_p_bound']:g}/en = {bound:.1g} with en = {en:,})"
        )
        tail = [
            i
            for i in range(len(names))
            if scipy["p_values"][i] is not None and 0 < scipy["p_values"][i] < results["tail_p"]
        ]
        if tail:
            relative, where = _max_rel_diff(
                [exact["p_values"][i] for i in tail], [scipy["p_values"][i] for i in tail]
            )
            if where is not None:
                i = tail[where]
                text += (
                    f"; in the tail (SciPy p < {results['tail_p']:g}, {len(tail)} features) "
                    "the largest "
                    f"relative difference is {relative:.1%}, on {_short(names[i])}: "
                    f"{fmt_p(exact['p_values'][i])} vs {fmt_p(scipy['p_values'][i])}"
                )
        text += "."
    evidently = runs.get(("evidently", "ks"))
    if evidently is not None and scipy is not None:
        difference = _max_abs_diff(evidently["p_values"], scipy["p_values"])
        text += (
            f" Evidently's KS p-values equal the SciPy worker's {_equal_text(difference)} "
            "(Evidently calls `ks_2samp` with its default method)."
        )
    psi = runs.get(("kubeloop-report", "psi"))
    wasserstein = runs.get(("kubeloop-exact", "wasserstein"))
    if psi is not None and wasserstein is not None:
        only = [
            i
            for i in injected
            if exact["drifted"][i] and not psi["drifted"][i] and not wasserstein["drifted"][i]
        ]
        shifts = [i for i in only if DRIFT.get(i, ("", 0.0))[0] == "shift"]
        if only:
            text += f" With {results['rows']:,} rows KS flags"
            if shifts:
                smallest = min(shifts, key=lambda i: DRIFT[i][1])
                text += f" a {describe_drift(smallest)} on {_short(names[smallest])}"
            else:
                text += " small changes"
            text += (
                ": p-values measure evidence, not size, which is why PSI and Wasserstein, "
                f"thresholds on an effect size, stay quiet on {_names(only, names)}."
            )
    return [text]


def _psi_bullet(results: dict[str, Any]) -> list[str]:
    runs = _index(results)
    ours = runs.get(("kubeloop-report", "psi"))
    theirs = runs.get(("evidently", "psi"))
    if ours is None or theirs is None:
        return []
    names = feature_names(results["features"])
    outside = results["data"]["outside_reference_range"]
    injected = [i for i, n in enumerate(names) if results["drift_injected"][n] != "none"]
    differ = [i for i in range(len(names)) if ours["drifted"][i] != theirs["drifted"][i]]
    head = (
        "same verdicts"
        if not differ
        else f"{len(differ)} different verdict{'s' if len(differ) > 1 else ''} "
        f"({_names(differ, names)})"
    )
    constants = results["versions"].get("kubeloop", {}).get("kubeloop_constants", {})
    epsilon = constants.get("psi_epsilon")
    text = (
        f"- **PSI, Kubeloop vs Evidently: {head}, different values.** Evidently bins "
        "reference and current together (equal-width bins, see above); Kubeloop uses the "
        f"reference's {results['bins']} quantile bins plus two outer bins for values beyond "
        "the reference's minimum and maximum. Mass outside the reference range therefore "
        "counts heavily for Kubeloop"
    )
    if epsilon is not None:
        text += f" (an empty reference bin counts as proportion {epsilon:g})"
    text += "."
    for i in differ:
        change = results["drift_injected"][names[i]]
        text += (
            f" On {_short(names[i])} ({'no drift injected' if change == 'none' else change}, "
            f"{outside[i]:.1%} of current values outside the reference range) Kubeloop's "
            f"PSI is {fmt_value(ours['scores'][i])}, Evidently's "
            f"{fmt_value(theirs['scores'][i])}."
        )
    if injected:
        pairs = ", ".join(
            f"{_short(names[i])} {fmt_value(ours['scores'][i])} / {fmt_value(theirs['scores'][i])}"
            for i in injected
        )
        text += f" Kubeloop / Evidently PSI on the injected features: {pairs}."
        both = [i for i in injected if not ours["drifted"][i] and not theirs["drifted"][i]]
        counts = [
            f"PSI flags {sum(ours['drifted'][i] for i in injected)} (Kubeloop) and "
            f"{sum(theirs['drifted'][i] for i in injected)} (Evidently)"
        ]
        for key, label in (
            (("kubeloop-exact", "wasserstein"), "Wasserstein"),
            (("kubeloop-exact", "ks"), "KS"),
        ):
            run = runs.get(key)
            if run is not None:
                counts.append(f"{label} {sum(run['drifted'][i] for i in injected)}")
        of = f"of the {len(injected)} injected drifts " + ", ".join(counts) + " (raw samples)."
        text += f" Both miss {_names(both, names)}; {of}" if both else f" Out {of}"
    return [text]


def _wasserstein_bullet(results: dict[str, Any]) -> list[str]:
    runs = _index(results)
    binned = runs.get(("kubeloop-report", "wasserstein"))
    exact = runs.get(("kubeloop-exact", "wasserstein"))
    if binned is None or exact is None:
        return []
    names = feature_names(results["features"])
    injected = [i for i, n in enumerate(names) if results["drift_injected"][n] != "none"]
    differ = [i for i in range(len(names)) if binned["drifted"][i] != exact["drifted"][i]]
    lower = [i for i in injected if binned["scores"][i] < exact["scores"][i]]
    head = (
        "same verdicts on all " + str(len(names)) + " features"
        if not differ
        else f"{len(differ)} different verdicts ({_names(differ, names)})"
    )
    text = (
        f"- **Wasserstein, binned vs raw: {head}; lower on {len(lower)} of the "
        f"{len(injected)} injected features.** The binned distance puts each bin's mass at "
        "its midpoint (the outer bins at their edge), which shortens the long tails of "
        f"{results['bins']} quantile bins"
    )
    gaps = sorted(injected, key=lambda i: exact["scores"][i] - binned["scores"][i], reverse=True)
    examples = [i for i in gaps[:2] if exact["scores"][i] > binned["scores"][i]]
    if examples:
        text += ": " + ", ".join(
            f"{_short(names[i])} {fmt_value(binned['scores'][i])} binned vs "
            f"{fmt_value(exact['scores'][i])} raw"
            for i in examples
        )
    text += (
        f". A feature near the {results['thresholds']['wasserstein']:g} threshold can flip; "
        "more bins (`kubeloop profile --bins`) or `kubeloop drift --exact` (raw samples) "
        "close the gap."
    )
    scipy = runs.get(("scipy", "wasserstein"))
    if scipy is not None:
        relative, _ = _max_rel_diff(exact["scores"], scipy["scores"])
        text += (
            " On the raw samples Kubeloop's normalised distance equals the SciPy worker's "
            f"{_equal_text(relative)} (relative)"
        )
        evidently = runs.get(("evidently", "wasserstein"))
        if evidently is not None:
            other, _ = _max_rel_diff(evidently["scores"], scipy["scores"])
            text += f", and Evidently's equals the SciPy worker's {_equal_text(other)}"
        text += "."
    return [text]


def render(results: dict[str, Any]) -> str:
    """The README section (without its markers), from the results alone."""
    lines = _intro(results)
    lines += _headline(results)
    lines += _profile_table(results)
    lines += _psi_table(results)
    lines += _targets(results)
    lines += _verdicts(results)
    bullets = _ks_bullet(results) + _psi_bullet(results) + _wasserstein_bullet(results)
    if bullets:
        lines += ["What the differences mean:", "", *bullets]
    return "\n".join(lines).rstrip() + "\n"


def write_readme(path: Path, section: str) -> None:
    text = path.read_text()
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: no {START_MARKER} ... {END_MARKER} block")
    head = text[: start + len(START_MARKER)]
    path.write_text(f"{head}\n{section}{text[end:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--evidently-python", help="interpreter with evidently installed")
    parser.add_argument("--data", type=Path, default=REPO / "bench" / "out" / "drift-data")
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench" / "results" / "drift-bench.json"
    )
    parser.add_argument("--readme", type=Path, default=README, help="README to render into")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="render the README section from --output without running anything",
    )
    parser.add_argument("--no-readme", action="store_true", help="do not write the README")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="ks", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.render_only:
        results = json.loads(args.output.read_text())
        if "repeats" not in results:
            raise SystemExit(f"{args.output} was written by an older benchmark: run it again")
    else:
        results = run_all(args)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    section = render(results)
    if not args.no_readme:
        write_readme(args.readme, section)
        print(f"rendered into {args.readme}", file=sys.stderr)
    print(section)


if __name__ == "__main__":
    main()
